// Compare data/suite/tokenizer.json (Hugging Face `tokenizers`, the Rust
// library through its Node binding) with SentencePiece ids.
// Usage (npm registry only; the binding ships prebuilt binaries):
//   mkdir -p /tmp/tokcheck && (cd /tmp/tokcheck && npm install tokenizers@0.23.2)
//   /usr/bin/python3 tools/check_tokenizer_suite.py > /tmp/spm_ids.jsonl
//   NODE_PATH=/tmp/tokcheck/node_modules node tools/check_tokenizer_suite.js \
//       data/suite/tokenizer.json /tmp/spm_ids.jsonl
const fs = require('fs');
const { Tokenizer } = require('tokenizers');
(async () => {
  const tok = Tokenizer.fromFile(process.argv[2]);
  const vocab = JSON.parse(fs.readFileSync(process.argv[2], 'utf8')).model.vocab;
  const score = (ids) => ids.reduce((a, i) => a + vocab[i][1], 0);
  let ties = 0;
  const lines = fs.readFileSync(process.argv[3], 'utf8').split('\n').filter(Boolean);
  let ok = 0, bad = 0, ntok = 0, dec_ok = 0;
  for (const line of lines) {
    const { text, ids } = JSON.parse(line);
    const enc = await tok.encode(text);
    const got = Array.from(enc.getIds());
    const want = [1].concat(ids);           // post-processor adds <s>
    ntok += ids.length;
    if (got.length === want.length && got.every((v, i) => v === want[i])) ok++;
    else {
      bad++;
      // same total piece score = an exact tie between two Viterbi paths
      if (Math.abs(score(got) - score(want)) < 1e-4
          && got.length === want.length) ties++;
      if (bad <= 3) {
        let i = 0; while (i < got.length && got[i] === want[i]) i++;
        console.log('MISMATCH at token', i, JSON.stringify(text.slice(0, 80)),
          'hf', got.slice(i, i + 6), 'spm', want.slice(i, i + 6));
      }
    }
    const dec = await tok.decode(got, true);
    if (dec === text) dec_ok++;
  }
  console.log(`documents ${lines.length}: ids identical ${ok}, different ${bad} ` +
    `(${ties} of them equal-score ties); ` +
    `decode(encode(text)) == text for ${dec_ok}; ${ntok} tokens`);
  process.exit(bad > ties ? 1 : 0);
})();
