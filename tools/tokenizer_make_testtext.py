#!/usr/bin/python3
"""Writes the tokenizer parity test text: one test case per line, mixed English / Japanese /
code / emoji / odd whitespace, deterministic.

English and Japanese lines are sampled from the Debian documentation corpus
(data/corpus/debian-docs.jsonl.gz, DFSG-free); the code, emoji and whitespace lines are
written here. Lines never contain U+0085 or U+FEFF: JavaScript's \\s and Unicode's White_Space
(PCRE2, Rust) disagree on them, so transformers.js ids would not be a fair reference there.

usage: tools/tokenizer_make_testtext.py CORPUS.jsonl.gz OUT.txt.gz
"""
import gzip
import json
import random
import sys

SYNTHETIC = [
    "int main(int argc, char **argv) {\n",  # newline stripped below; keeps the braces
    "\tfor (size_t i = 0; i < n; i++) { sum += x[i] * y[i]; }",
    "    def forward(self, x: torch.Tensor) -> torch.Tensor:  # 4-space indent",
    "\t\t\treturn {\"key\": [1, 2, 3], 'other': None}  \t ",
    "if (a&&b||!c) x <<= 2; else y >>= 3; // bit twiddling 0xDEADBEEF 0b1011",
    "SELECT id, name FROM users WHERE email LIKE '%@example.com' ORDER BY 2 DESC;",
    "https://example.org/path/to/file.tar.gz?query=1&x=%E3%81%82#frag",
    "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇯🇵🇺🇸 ❤️ ✨🎉 🙏 🧑🏿‍💻",
    "Mixed: 東京は2024年に𠮷野家で🍜を食べた。I said \"hello\" — and left…",
    "Full-width: ＡＢＣｄｅｆ１２３！？（）［］　全角スペース　ｶﾀｶﾅ ﾊﾝｶｸ",
    "Odd whitespace:\u00a0nbsp\u2009thin\u2003em\u3000ideographic\u200bzwsp  two  spaces",
    "Tabs\tbetween\t\twords and a carriage\rreturn inside the line",
    "   leading spaces and trailing spaces   ",
    "\u000b vertical tab \u000c form feed",
    "Numbers: 3.14159 2,718,281 1e-10 123456789012345678901234567890 ½ ² ①②③",
    "Combining: e\u0301 a\u0308 n\u0303 ﬁ ﬂ Å Ω ẞ İstanbul ΣΊΣΥΦΟΣ",
    "Scripts: Привет мир · Γειά σου · مرحبا بالعالم · שלום · 안녕하세요 · 你好世界 · नमस्ते",
    "Contractions: don't, I'm, we've, they'll, she'd, it's, DON'T, I'M, You'Re",
    "'s 't 're 've 'm 'll 'd 'S 'T",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!???...,,,;;;:::---___===+++***&&&^^^%%%$$$###@@@~~~```|||\\\\\\///",
    "<s> </s> <unk> <pad> [CLS] <|endoftext|> <0x41> ▁ ▁▁ ▁hello",
    "Ｈｅｌｌｏ　ｗｏｒｌｄ！　これは全角の英数字です：０１２３４５６７８９",
    "ｱｲｳｴｵ ｶﾞｷﾞｸﾞ ﾊﾟﾋﾟﾌﾟ 半角カナと①②③とⅠⅡⅢと㈱㍿",
    "日本語の文章には、句読点（、。）や括弧「」『』【】が使われます。",
    "𝐁𝐨𝐥𝐝 𝑰𝒕𝒂𝒍𝒊𝒄 𝔉𝔯𝔞𝔨𝔱𝔲𝔯 ℌ𝔢𝔩𝔩𝔬 ㌀㌁ ﷺ",
    "Control-ish: \u0001\u0002\u001f and DEL \u007f and bell \u0007",
]


def main():
    corpus, out = sys.argv[1], sys.argv[2]
    rng = random.Random(20241124)
    lines = {"en": [], "ja": []}
    with gzip.open(corpus, "rt", encoding="utf-8") as f:
        for row in f:
            doc = json.loads(row)
            lang = doc.get("lang")
            if lang not in lines:
                continue
            for line in doc["text"].split("\n"):
                if line.strip() and "\u0085" not in line and "\ufeff" not in line:
                    lines[lang].append(line)
    picked = rng.sample(lines["en"], 1400) + rng.sample(lines["ja"], 1400)
    # A few long lines: whole Japanese paragraphs glued together (long \p{L}+ words).
    for _ in range(10):
        picked.append("".join(rng.sample(lines["ja"], 12)))
    picked += [s.replace("\n", "") for s in SYNTHETIC] * 3
    rng.shuffle(picked)
    text = "".join(line + "\n" for line in picked if line)
    with gzip.open(out, "wt", encoding="utf-8", newline="") as f:
        f.write(text)
    print(f"{len(picked)} lines, {len(text.encode())} bytes -> {out}")


if __name__ == "__main__":
    main()
