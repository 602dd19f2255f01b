// Reference token ids from transformers.js' tokenizers (@lenml/tokenizers), for the parity
// fixtures of the tokenizer stage. One line of ids (space-separated) per input line, no special
// tokens, the newline not part of the text (as `saeflow tokenize`).
//
// usage: node tools/tokenizer_reference.mjs CACHE_DIR NAME|DIR < text > ids
//   (NAME: llama3, llama2, gpt2, gemma, gpt4, gpt4o, from CACHE_DIR as tools/tokenizer_fetch_npm.sh
//   fills it; DIR holds tokenizer.json and
//   tokenizer_config.json, e.g. a variant from tools/tokenizer_variants.py)
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [cache, name] = process.argv.slice(2);
if (!cache || !name) {
  console.error("usage: node tokenizer_reference.mjs CACHE_DIR NAME|DIR < text");
  process.exit(2);
}
const lib = await import(pathToFileURL(`${cache}/tokenizers/dist/main.mjs`).href);
const models = name.includes("/") ? name : `${cache}/tokenizer-${name}/models`;
const tokenizer = lib.TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(readFileSync(`${models}/tokenizer.json`, "utf8")),
  tokenizerConfig: JSON.parse(readFileSync(`${models}/tokenizer_config.json`, "utf8")),
});
const text = readFileSync(0, "utf8");
const lines = text.split("\n");
if (lines[lines.length - 1] === "") lines.pop();
const out = lines.map((line) => tokenizer.encode(line, { add_special_tokens: false }).join(" "));
process.stdout.write(out.join("\n") + "\n");
