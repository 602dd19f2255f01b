/* Unit tests of tokenizer_lib: token display strings and decoding, piece lookups, special
 * tokens, and untrusted tokenizer files (empty, truncated, corrupted, malformed JSON) failing
 * cleanly with a message instead of crashing (run it under ASan/UBSan too).
 * Without the LLM-jp model only its checks are skipped; the corruption tests then use SPM.model.
 * usage: tok_test LLMJP.model SPM.model [LLAMA3_TOKENIZER_JSON [LLAMA2_TOKENIZER_JSON]] */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tok.h"
#include "sf_check.h"

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    *len = fread(p, 1, (size_t)n, f);
    fclose(f);
    return p;
}

static const char *display(const tok_tokenizer *t, int32_t id) {
    static char buf[256];
    tok_token_display(t, id, buf, sizeof buf);
    return buf;
}

static int32_t id_of(const tok_tokenizer *t, const char *piece) { return tok_piece_id(t, piece, strlen(piece)); }

/* Encodes then decodes text; returns 1 if it comes back unchanged. */
static int round_trips(const tok_tokenizer *t, const char *text) {
    tok_ids ids = {0};
    size_t len = 0;
    int ok = tok_encode(t, text, strlen(text), 0, &ids) == 0;
    char *back = ok ? tok_decode(t, ids.ids, ids.n, 1, &len) : NULL;
    ok = back && len == strlen(text) && memcmp(back, text, len) == 0;
    if (!ok) printf("  round trip of \"%s\" gave \"%s\"\n", text, back ? back : "(null)");
    free(back);
    tok_ids_free(&ids);
    return ok;
}

static void test_llmjp(const char *path) {
    char err[512] = "";
    tok_tokenizer *t = tok_load(path, err, sizeof err);
    CHECK(t, "load %s: %s", path, err);
    if (!t) return;
    CHECK(strcmp(tok_kind(t), "sentencepiece-unigram") == 0, "kind %s", tok_kind(t));
    CHECK(tok_vocab_size(t) == 99574 && tok_bos_id(t) == 1 && tok_eos_id(t) == 2, "vocab/bos/eos");
    int32_t hello = id_of(t, "\xe2\x96\x81Hello");
    CHECK(hello == 22564, "id of ▁Hello is %d", hello);
    CHECK(strcmp(display(t, hello), " Hello") == 0, "display ▁Hello = '%s'", display(t, hello));
    int32_t b_e3 = id_of(t, "<0xE3>"), b_41 = id_of(t, "<0x41>");
    CHECK(b_e3 >= 0 && strcmp(display(t, b_e3), "<0xE3>") == 0, "a lone UTF-8 lead byte shows as <0xE3>");
    CHECK(b_41 >= 0 && strcmp(display(t, b_41), "A") == 0, "byte <0x41> shows as A: '%s'", display(t, b_41));
    CHECK(strcmp(display(t, 1), "<s>") == 0, "control token shows its name");
    char small[4];
    size_t full = tok_token_display(t, hello, small, sizeof small);
    CHECK(full == 6 && strcmp(small, " He") == 0, "display truncates like snprintf (%zu, '%s')", full, small);
    tok_ids ids = {0};
    CHECK(tok_encode(t, "Hello", 5, TOK_ADD_SPECIAL, &ids) == 0 && ids.n >= 2 && ids.ids[0] == 1,
          "TOK_ADD_SPECIAL puts BOS first");
    CHECK(tok_encode(t, "", 0, 0, &ids) == 0 && ids.n == 0, "empty text, no ids");
    size_t len;
    int32_t with_bos[] = {1, hello};
    char *s = tok_decode(t, with_bos, 2, 1, &len);
    CHECK(s && strcmp(s, "Hello") == 0, "decode skips <s> and the dummy prefix: '%s'", s ? s : "");
    free(s);
    s = tok_decode(t, with_bos, 2, 0, &len);
    CHECK(s && strcmp(s, "<s> Hello") == 0, "decode keeps <s> unless skipping specials: '%s'", s ? s : "");
    free(s);
    CHECK(round_trips(t, "日本語と English、絵文字😀も。  spaces\tand tabs"), "round trip");
    tok_ids_free(&ids);
    tok_free(t);
}

/* Llama-2's tokenizer.json: TemplateProcessing adds <s>, byte fallback, the Strip decoder. */
static void test_llama2(const char *path) {
    char err[512] = "";
    tok_tokenizer *t = tok_load(path, err, sizeof err);
    CHECK(t, "load %s: %s", path, err);
    if (!t) return;
    CHECK(tok_bos_id(t) == 1 && tok_eos_id(t) == -1, "TemplateProcessing: BOS <s> = 1, no EOS (%d, %d)",
          tok_bos_id(t), tok_eos_id(t));
    tok_ids plain = {0}, special = {0};
    const char *txt = "Hello 𠮷";
    CHECK(tok_encode(t, txt, strlen(txt), 0, &plain) == 0 && tok_encode(t, txt, strlen(txt), TOK_ADD_SPECIAL, &special) == 0,
          "encode");
    CHECK(special.n == plain.n + 1 && special.ids[0] == 1 && memcmp(special.ids + 1, plain.ids, plain.n * sizeof *plain.ids) == 0,
          "TOK_ADD_SPECIAL = <s> + the plain ids");
    int32_t b = id_of(t, "<0xF0>");
    CHECK(b >= 0 && plain.n >= 4 && plain.ids[plain.n - 4] == b, "𠮷 falls back to its 4 bytes");
    CHECK(strcmp(display(t, b), "<0xF0>") == 0 && strcmp(display(t, id_of(t, "<0x41>")), "A") == 0, "byte display");
    size_t len;
    char *back = tok_decode(t, special.ids, special.n, 1, &len);
    CHECK(back && strcmp(back, txt) == 0, "decode: '%s'", back ? back : "");
    free(back);
    tok_ids_free(&plain);
    tok_ids_free(&special);
    tok_free(t);
}

static void test_llama3(const char *path) {
    char err[512] = "";
    tok_tokenizer *t = tok_load(path, err, sizeof err);
    CHECK(t, "load %s: %s", path, err);
    if (!t) return;
    CHECK(strcmp(tok_kind(t), "hf-bpe") == 0 && tok_vocab_size(t) == 128256, "kind %s, vocab %d", tok_kind(t),
          tok_vocab_size(t));
    int32_t hello = id_of(t, "\xc4\xa0hello"); /* "Ġhello" */
    CHECK(hello >= 0 && strcmp(display(t, hello), " hello") == 0, "display Ġhello = '%s'", display(t, hello));
    int32_t nl = id_of(t, "\xc4\x8a"); /* "Ċ" = "\n" */
    CHECK(nl >= 0 && strcmp(display(t, nl), "\n") == 0, "display Ċ is a newline");
    int32_t lead = id_of(t, "\xc3\xa3"); /* "ã" = byte 0xE3 alone */
    CHECK(lead >= 0 && strcmp(display(t, lead), "<0xE3>") == 0, "partial UTF-8 token shows <0xE3>: '%s'",
          display(t, lead));
    int32_t bot = id_of(t, "<|begin_of_text|>");
    CHECK(bot == 128000 && strcmp(display(t, bot), "<|begin_of_text|>") == 0, "special token by name");
    tok_ids ids = {0};
    const char *txt = "a<|end_of_text|>b";
    CHECK(tok_encode(t, txt, strlen(txt), 0, &ids) == 0 && ids.n == 3 && ids.ids[1] == 128001,
          "added tokens in the text are matched whole");
    CHECK(round_trips(t, "日本語と English、絵文字😀も。  spaces\tand tabs\r\n"), "byte-level round trip");
    tok_ids_free(&ids);
    tok_free(t);
}

/* Pre-tokenisation seen through a BPE model without merges, with ignore_merges, whose vocabulary
 * holds the expected words and every single character: a pre-tokenised word comes out as one piece
 * if it is an expected word, else as its characters. Returns the pieces joined by '|'. */
static const char *pretok(const char *pre_tokenizer, const char *text, const char *words) {
    static char out[1024];
    char json[8192], seen[64][64];
    int n = snprintf(json, sizeof json, "{\"pre_tokenizer\": %s, \"model\": {\"type\": \"BPE\", \"merges\": [], "
                     "\"ignore_merges\": true, \"unk_token\": \"<unk>\", \"vocab\": {\"<unk>\": 0", pre_tokenizer);
    int n_seen = 0;
    /* The expected words, then each character of the text (those JSON would need to escape are
     * left out: they become <unk>, which no expected word contains). */
    char list[2048];
    snprintf(list, sizeof list, "%s", words);
    for (int pass = 0; pass < 2; pass++) {
        const char *c = pass == 0 ? list : text;
        while (*c && n_seen < 64) {
            size_t k = 1;
            if (pass == 0) k = strcspn(c, "|");
            else
                while ((c[k] & 0xC0) == 0x80) k++;
            char w[64] = "";
            memcpy(w, c, k < 63 ? k : 63);
            c += k + (pass == 0 && c[k] == '|');
            bool dup = (unsigned char)w[0] < 0x20 || w[0] == '"' || w[0] == '\\';
            for (int i = 0; i < n_seen && !dup; i++) dup = strcmp(seen[i], w) == 0;
            if (dup) continue;
            strcpy(seen[n_seen++], w);
            n += snprintf(json + n, sizeof json - n, ", \"%s\": %d", w, n_seen);
        }
    }
    snprintf(json + n, sizeof json - n, "}}}");
    char err[256] = "";
    tok_tokenizer *t = tok_load_mem(json, strlen(json), err, sizeof err);
    if (!t) {
        snprintf(out, sizeof out, "load error: %s", err);
        return out;
    }
    tok_ids ids = {0};
    out[0] = 0;
    if (tok_encode(t, text, strlen(text), 0, &ids) == 0)
        for (size_t i = 0; i < ids.n; i++) {
            size_t len;
            const char *p = tok_piece(t, ids.ids[i], &len);
            snprintf(out + strlen(out), sizeof out - strlen(out), "%s%.*s", i ? "|" : "", (int)len, p);
        }
    tok_ids_free(&ids);
    tok_free(t);
    return out;
}

#define EXPECT_PRETOK(pre, text, want)                                                      \
    do {                                                                                    \
        const char *got = pretok(pre, text, want);                                          \
        CHECK(strcmp(got, want) == 0, "%s on '%s': got '%s', want '%s'", pre, text, got, want); \
    } while (0)

/* The split behaviours, on the example of tokenizers' SplitDelimiterBehavior documentation, and
 * the Digits, Punctuation, WhitespaceSplit and Whitespace pre-tokenisers (Rust semantics:
 * char::is_numeric, is_punctuation, is_whitespace, \w). */
static void test_pretokenizers(void) {
    const char *text = "the-final--countdown";
#define SPLIT(b) "{\"type\": \"Split\", \"pattern\": {\"String\": \"-\"}, \"behavior\": \"" b "\", \"invert\": false}"
    EXPECT_PRETOK(SPLIT("Removed"), text, "the|final|countdown");
    EXPECT_PRETOK(SPLIT("Isolated"), text, "the|-|final|-|-|countdown");
    EXPECT_PRETOK(SPLIT("MergedWithPrevious"), text, "the-|final-|-|countdown");
    EXPECT_PRETOK(SPLIT("MergedWithNext"), text, "the|-final|-|-countdown");
    EXPECT_PRETOK(SPLIT("Contiguous"), text, "the|-|final|--|countdown");
    EXPECT_PRETOK("{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\d+\"}, \"behavior\": \"Removed\", \"invert\": true}",
                  "ab12cd3", "12|3");
    EXPECT_PRETOK("{\"type\": \"Digits\", \"individual_digits\": true}", "abc123def4", "abc|1|2|3|def|4");
    EXPECT_PRETOK("{\"type\": \"Digits\", \"individual_digits\": false}", "abc123def4x\xef\xbc\x91\xef\xbc\x92",
                  "abc|123|def|4|x|\xef\xbc\x91\xef\xbc\x92");
    EXPECT_PRETOK("{\"type\": \"Punctuation\"}", "Hey, friend!?", "Hey|,| friend|!|?");
    EXPECT_PRETOK("{\"type\": \"Punctuation\", \"behavior\": \"Contiguous\"}", "Hey, friend!?", "Hey|,| friend|!?");
    EXPECT_PRETOK("{\"type\": \"WhitespaceSplit\"}", "Hey  friend\xe3\x80\x80!\t", "Hey|friend|!");
    EXPECT_PRETOK("{\"type\": \"Whitespace\"}", "Hey man!! \xe6\x97\xa5\xe6\x9c\xac\xe3\x80\x82",
                  "Hey|man|!!|\xe6\x97\xa5\xe6\x9c\xac|\xe3\x80\x82");
    EXPECT_PRETOK("{\"type\": \"CharDelimiterSplit\", \"delimiter\": \"-\"}", text, "the|final|countdown");
    EXPECT_PRETOK("{\"type\": \"BertPreTokenizer\"}", "Hey, friend!?  \xe6\x97\xa5\xe6\x9c\xac\xe3\x80\x82",
                  "Hey|,|friend|!|?|\xe6\x97\xa5\xe6\x9c\xac|\xe3\x80\x82");
#undef SPLIT
}

/* Ids of text under a WordLevel model (vocabulary [UNK] a b c aX bY, WhitespaceSplit) after the
 * given normaliser and post-processor, as space-separated ids. */
static const char *wordlevel(const char *normalizer, const char *post, const char *text) {
    static char out[256];
    char json[2048], err[256] = "";
    snprintf(json, sizeof json, "{\"normalizer\": %s, \"post_processor\": %s, \"pre_tokenizer\": {\"type\": "
             "\"WhitespaceSplit\"}, \"model\": {\"type\": \"WordLevel\", \"unk_token\": \"[UNK]\", \"vocab\": "
             "{\"[UNK]\": 0, \"a\": 1, \"b\": 2, \"c\": 3, \"aX\": 4, \"bY\": 5, \"<s>\": 6, \"</s>\": 7}}}",
             normalizer, post);
    tok_tokenizer *t = tok_load_mem(json, strlen(json), err, sizeof err);
    if (!t) {
        snprintf(out, sizeof out, "load error: %s", err);
        return out;
    }
    tok_ids ids = {0};
    out[0] = 0;
    if (tok_encode(t, text, strlen(text), TOK_ADD_SPECIAL, &ids) == 0)
        for (size_t i = 0; i < ids.n; i++) snprintf(out + strlen(out), sizeof out - strlen(out), "%s%d", i ? " " : "", ids.ids[i]);
    tok_ids_free(&ids);
    tok_free(t);
    return out;
}

/* Normalisers and models by tokenizers' documented (Rust) behaviour: WordLevel, Regex Replace
 * with a lookbehind and an empty match, Strip, StripAccents, RobertaProcessing. */
static void test_components(void) {
    const char *got = wordlevel("null", "null", "a b zz c");
    CHECK(strcmp(got, "1 2 0 3") == 0, "WordLevel: unknown word is [UNK]: %s", got);
    got = wordlevel("{\"type\": \"Replace\", \"pattern\": {\"Regex\": \"(?<=a)b\"}, \"content\": \"X\"}", "null", "ab cb");
    CHECK(strcmp(got, "4 0") == 0, "Replace with a lookbehind: %s", got);
    got = wordlevel("{\"type\": \"Replace\", \"pattern\": {\"Regex\": \"$\"}, \"content\": \"Y\"}", "null", "b");
    CHECK(strcmp(got, "5") == 0, "Replace of an empty match at the end: %s", got);
    got = wordlevel("{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Strip\", \"strip_left\": false, "
                    "\"strip_right\": true}, {\"type\": \"Replace\", \"pattern\": {\"Regex\": \"$\"}, \"content\": \"Y\"}]}",
                    "null", "b \xe3\x80\x80\t");
    CHECK(strcmp(got, "5") == 0, "Strip right (ideographic space, tab) before Replace: %s", got);
    got = wordlevel("{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFD\"}, {\"type\": \"StripAccents\"}, "
                    "{\"type\": \"Lowercase\"}]}", "null", "\xc3\xa1 B");
    CHECK(strcmp(got, "1 2") == 0, "NFD + StripAccents + Lowercase: %s", got);
    got = wordlevel("{\"type\": \"NFKD\"}", "null", "\xef\xbd\x81");
    CHECK(strcmp(got, "1") == 0, "NFKD of a full-width a: %s", got);
    got = wordlevel("{\"type\": \"StripAccents\"}", "null", "a\xcc\x81 \xc3\xa1");
    CHECK(strcmp(got, "1 0") == 0, "StripAccents drops Mn, composed characters stay: %s", got);
    got = wordlevel("null", "{\"type\": \"RobertaProcessing\", \"sep\": [\"</s>\", 7], \"cls\": [\"<s>\", 6]}", "a");
    CHECK(strcmp(got, "6 1 7") == 0, "RobertaProcessing: %s", got);
    got = wordlevel("{\"type\": \"Precompiledx\"}", "null", "a");
    CHECK(strstr(got, "unsupported normalizer Precompiledx"), "an unknown component names itself: %s", got);
}

/* Ids as Hugging Face's tokenizers treats two irregular vocabularies real files have: a gap in the
 * ids (GPT-4's cl100k has holes below its special tokens) loads, its hole is never produced and
 * decodes to nothing; with byte_fallback, a character whose bytes lack a <0xNN> piece becomes
 * <unk> (Gemma has no <0x09>), one whose bytes all have pieces becomes those bytes. */
static void test_irregular_vocab(void) {
    char err[512] = "";
    const char *gap = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":2},\"merges\":[]}}";
    tok_tokenizer *t = tok_load_mem(gap, strlen(gap), err, sizeof err);
    CHECK(t, "vocabulary with a gap in its ids: %s", err);
    if (t) {
        tok_ids ids = {0};
        size_t len = 9;
        int32_t hole[] = {0, 1, 2};
        char *back = tok_decode(t, hole, 3, 0, &len);
        CHECK(tok_encode(t, "ab", 2, 0, &ids) == 0 && ids.n == 2 && ids.ids[0] == 0 && ids.ids[1] == 2,
              "gap vocabulary: \"ab\" is not [0, 2]");
        CHECK(tok_vocab_size(t) == 3 && !tok_piece(t, 1, &len) && back && strcmp(back, "ab") == 0,
              "gap vocabulary: id 1 is not an empty hole (decoded \"%s\")", back ? back : "(null)");
        free(back);
        tok_ids_free(&ids);
        tok_free(t);
    }
    const char *bytes = "{\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"unk_token\":\"<unk>\",\"merges\":[],"
                        "\"vocab\":{\"<unk>\":0,\"a\":1,\"<0xC3>\":2,\"<0xA9>\":3,\"<0x09>\":4}}}";
    t = tok_load_mem(bytes, strlen(bytes), err, sizeof err);
    CHECK(t, "byte_fallback with byte pieces missing: %s", err);
    if (t) {
        tok_ids ids = {0};
        /* a, \xc3\xa9 (both bytes have pieces), \t (has <0x09>), \n (no <0x0A>: unk) */
        int ok = tok_encode(t, "a\xc3\xa9\t\n", 5, 0, &ids) == 0 && ids.n == 5;
        const int32_t want[] = {1, 2, 3, 4, 0};
        for (size_t i = 0; ok && i < 5; i++) ok = ids.ids[i] == want[i];
        CHECK(ok, "byte_fallback with byte pieces missing: wrong ids for a, e-acute, tab, newline");
        tok_ids_free(&ids);
        tok_free(t);
    }
}

/* single_word, as Hugging Face's AddedVocabulary documents and implements it (transformers.js
 * ignores the flag, so it is not in the parity test): an added token with a word character
 * (Rust's \w: letters, digits, marks, '_') right before or after it is no match, and its text is
 * encoded as ordinary text. */
/* A tokenizer.json Unigram model without unk_id cannot encode a character it has no piece for:
 * an error, as in Hugging Face, not an id outside the vocabulary. */
static void test_unigram_without_unk(void) {
    char err[512] = "";
    const char *json = "{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",-1.0],[\"b\",-2.0]]}}";
    tok_tokenizer *t = tok_load_mem(json, strlen(json), err, sizeof err);
    CHECK(t, "Unigram without unk_id: %s", err);
    if (!t) return;
    tok_ids ids = {0};
    CHECK(tok_encode(t, "ab", 2, 0, &ids) == 0 && ids.n == 2, "Unigram without unk_id: \"ab\" did not encode");
    CHECK(tok_encode(t, "abc", 3, 0, &ids) != 0, "Unigram without unk_id: \"abc\" encoded (c has no piece)");
    tok_ids_free(&ids);
    tok_free(t);
}

static void test_single_word(void) {
    char err[512] = "";
    const char *json = "{\"model\":{\"type\":\"BPE\",\"merges\":[],\"vocab\":{\"a\":0,\"b\":1,\"x\":2,\"_\":3,"
                       "\".\":4,\" \":5,\"\xc3\xa9\":6,\"ab\":7}},\"added_tokens\":[{\"id\":7,\"content\":\"ab\","
                       "\"single_word\":true,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":false}]}";
    tok_tokenizer *t = tok_load_mem(json, strlen(json), err, sizeof err);
    CHECK(t, "single_word tokenizer: %s", err);
    if (!t) return;
    /* ab: match; xab, ab_, \xc3\xa9ab (é is a letter): none; "ab." and the last: match */
    const char *text = "ab xab ab_ ab. \xc3\xa9" "ab ab";
    const int32_t want[] = {7, 5, 2, 0, 1, 5, 0, 1, 3, 5, 7, 4, 5, 6, 0, 1, 5, 7};
    tok_ids ids = {0};
    int ok = tok_encode(t, text, strlen(text), 0, &ids) == 0 && ids.n == sizeof want / sizeof *want;
    for (size_t i = 0; ok && i < ids.n; i++) ok = ids.ids[i] == want[i];
    CHECK(ok, "single_word: \"%s\" matched the added token inside a word, or missed a whole one", text);
    tok_ids_free(&ids);
    tok_free(t);
}

/* A file that is not a tokenizer must fail with a message, never crash. */
static void expect_reject(const char *what, const void *buf, size_t len) {
    char err[512] = "";
    tok_tokenizer *t = tok_load_mem(buf, len, err, sizeof err);
    CHECK(!t && err[0], "%s: accepted or no message", what);
    if (t) tok_free(t);
}

/* tok_find: a file, a folder holding tokenizer.json (first) or tokenizer.model, a list tried in
 * order; nothing found names every path tried. */
static void test_find(const char *spm_model) {
    char dir[] = "/tmp/tok_find_XXXXXX", a[64], b[64], b_model[96], b_json[96], spec[256], got[256], err[1024];
    CHECK(mkdtemp(dir), "mkdtemp");
    snprintf(a, sizeof a, "%s/a", dir); /* an empty folder: the suite without a tokenizer of its own */
    snprintf(b, sizeof b, "%s/b", dir); /* a checkpoint folder with one */
    snprintf(b_model, sizeof b_model, "%s/tokenizer.model", b);
    snprintf(b_json, sizeof b_json, "%s/tokenizer.json", b);
    CHECK(mkdir(a, 0777) == 0 && mkdir(b, 0777) == 0, "mkdir");
    char abs_model[4096];
    CHECK(realpath(spm_model, abs_model) && symlink(abs_model, b_model) == 0, "symlink the model");
    snprintf(spec, sizeof spec, "%s,%s", a, b);
    CHECK(tok_find(spec, got, sizeof got, err, sizeof err) == 0 && strcmp(got, b_model) == 0,
          "the first candidate without a tokenizer is passed over: got '%s' %s", got, err);
    tok_tokenizer *t = tok_load(spec, err, sizeof err);
    CHECK(t && tok_vocab_size(t) > 0, "tok_load through the list: %s", err);
    tok_free(t);
    FILE *f = fopen(b_json, "w");
    CHECK(f && fputs("{}", f) >= 0 && fclose(f) == 0, "write tokenizer.json");
    CHECK(tok_find(b, got, sizeof got, err, sizeof err) == 0 && strcmp(got, b_json) == 0,
          "a folder's tokenizer.json comes before its tokenizer.model: got '%s'", got);
    CHECK(tok_find(b_model, got, sizeof got, err, sizeof err) == 0 && strcmp(got, b_model) == 0, "a file as itself");
    snprintf(spec, sizeof spec, "%s,%s/missing", a, dir);
    CHECK(tok_find(spec, got, sizeof got, err, sizeof err) != 0 && strstr(err, "no tokenizer found") &&
              strstr(err, "/a/tokenizer.json") && strstr(err, "/a/tokenizer.model") && strstr(err, "/missing") &&
              strstr(err, "set tokenizer"),
          "nothing found: every path tried and what to set: '%s'", err);
    CHECK(tok_find("", got, sizeof got, err, sizeof err) != 0 && strstr(err, "empty"), "an empty spec: '%s'", err);
    unlink(b_json);
    unlink(b_model);
    rmdir(a);
    rmdir(b);
    rmdir(dir);
}

/* An empty file is named as empty, not as a SentencePiece model of 0 pieces. */
static void test_empty_file(void) {
    const char *cases[] = {"", "\n  \n", "\xef\xbb\xbf"};
    for (int c = 0; c < 3; c++) {
        char err[512] = "";
        tok_tokenizer *t = tok_load_mem(cases[c], strlen(cases[c]), err, sizeof err);
        CHECK(!t && strstr(err, "empty") && strstr(err, "not a tokenizer") && !strstr(err, "pieces"),
              "empty file case %d: '%s'", c, err);
        if (t) tok_free(t);
    }
}

static void test_untrusted(const char *spm_model) {
    expect_reject("empty", "", 0);
    expect_reject("not protobuf", "\xff\xff\xff\xff\x0f", 5);
    expect_reject("JSON without model", "{}", 2);
    expect_reject("JSON syntax", "{\"model\": ", 10);
    expect_reject("unsupported model", "{\"model\":{\"type\":\"Magic\",\"vocab\":{\"a\":0}}}", 43);
    const char *wp = "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}";
    expect_reject("WordPiece without unk_token", wp, strlen(wp));
    const char *unk = "{\"model\":{\"type\":\"Unigram\",\"unk_id\":5,\"vocab\":[[\"<unk>\",0.0],[\"a\",-1.0]]}}";
    expect_reject("Unigram unk_id outside the vocabulary", unk, strlen(unk));
    const char *merge = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}";
    expect_reject("merge to a token not in the vocabulary", merge, strlen(merge));
    const char *regex = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
                        "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}}";
    expect_reject("bad regex", regex, strlen(regex));
    const char *norm = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"normalizer\":{\"type\":\"Magic\"}}";
    expect_reject("unknown normalizer", norm, strlen(norm));

    size_t len;
    char *model = read_file(spm_model, &len);
    CHECK(model, "cannot read %s", spm_model);
    if (!model) return;
    expect_reject("truncated model", model, len / 2);
    /* Corrupted copies: each either loads (and then encodes safely) or fails with a message. */
    unsigned seed = 12345;
    char *copy = malloc(len);
    int loaded = 0;
    for (int round = 0; round < 40; round++) {
        memcpy(copy, model, len);
        for (int k = 0; k <= round % 3; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 4) % (round < 20 ? 4096 : len);
            copy[at] = (char)(seed >> 20);
        }
        char err[512] = "";
        tok_tokenizer *t = tok_load_mem(copy, len, err, sizeof err);
        if (!t) {
            CHECK(err[0], "corrupted model rejected without a message");
            continue;
        }
        loaded++;
        tok_ids ids = {0};
        const char *text = "Corrupted models must not crash: 日本語 😀 \xff";
        CHECK(tok_encode(t, text, strlen(text), TOK_ADD_SPECIAL, &ids) == 0, "encode with a corrupted model");
        for (size_t i = 0; i < ids.n; i++) CHECK(ids.ids[i] >= 0 && ids.ids[i] < tok_vocab_size(t), "id in range");
        size_t dl;
        free(tok_decode(t, ids.ids, ids.n, 0, &dl));
        tok_ids_free(&ids);
        tok_free(t);
    }
    printf("corrupted models: %d of 40 still loaded, all handled\n", loaded);
    free(copy);
    free(model);
}

static int readable(const char *path) {
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (f) fclose(f);
    return f != NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: tok_test LLMJP.model SPM.model [LLAMA3_TOKENIZER_JSON [LLAMA2_TOKENIZER_JSON]]\n");
        return 2;
    }
    const char *llmjp = argv[1], *spm_model = argv[2];
    if (readable(llmjp)) {
        test_llmjp(llmjp);
        spm_model = llmjp;
    } else {
        printf("note: %s absent, LLM-jp checks skipped; corruption tests use %s\n", llmjp, spm_model);
    }
    if (argc > 3 && readable(argv[3])) test_llama3(argv[3]);
    else printf("note: Llama-3 tokenizer.json not given or absent, its checks skipped\n");
    if (argc > 4 && readable(argv[4])) test_llama2(argv[4]);
    else printf("note: Llama-2 tokenizer.json not given or absent, its checks skipped\n");
    test_pretokenizers();
    test_components();
    test_irregular_vocab();
    test_single_word();
    test_unigram_without_unk();
    test_empty_file();
    test_find(spm_model);
    test_untrusted(spm_model);
    printf(failures ? "%d FAILED\n" : "all passed\n", failures);
    return failures ? 1 : 0;
}
