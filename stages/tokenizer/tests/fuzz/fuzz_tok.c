/* libFuzzer targets for tokenizer_lib (built with -Dfuzz=true and CC=clang):
 *   fuzz_tok_load:   the input is a tokenizer file (SentencePiece protobuf or tokenizer.json);
 *                    loading must fail cleanly or give a tokenizer that encodes and decodes safely.
 *   fuzz_tok_encode: the input is text, encoded and decoded with the tokenizer named by
 *                    $SAEFLOW_FUZZ_TOKENIZER (default: the LLM-jp model in ../shared). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok.h"

static void exercise(const tok_tokenizer *t, const char *text, size_t len) {
    tok_ids ids = {0};
    if (tok_encode(t, text, len, TOK_ADD_SPECIAL, &ids) == 0) {
        size_t len;
        for (size_t i = 0; i < ids.n; i++) /* an id in range that some token has (never a hole) */
            if (ids.ids[i] < 0 || ids.ids[i] >= tok_vocab_size(t) || !tok_piece(t, ids.ids[i], &len)) abort();
        size_t n;
        free(tok_decode(t, ids.ids, ids.n, 0, &n));
        char buf[64];
        for (size_t i = 0; i < ids.n && i < 16; i++) tok_token_display(t, ids.ids[i], buf, sizeof buf);
        /* every id decodes, holes and specials included */
        int32_t v = tok_vocab_size(t), probe[] = {0, v / 3, v / 2, v - 1};
        free(tok_decode(t, probe, 4, 0, &n));
        for (int i = 0; i < 4; i++) tok_token_display(t, probe[i], buf, sizeof buf);
    }
    tok_ids_free(&ids);
}

#ifdef FUZZ_LOAD
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    tok_tokenizer *t = tok_load_mem(data, size, err, sizeof err);
    if (t) {
        static const char text[] = "Fuzzing: 日本語 テキスト 😀  spaces\ttabs \xff\xfe end";
        exercise(t, text, sizeof text - 1);
        tok_free(t);
    }
    return 0;
}
#else
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static tok_tokenizer *t;
    if (!t) {
        const char *path = getenv("SAEFLOW_FUZZ_TOKENIZER");
        char err[512];
        t = tok_load(path ? path : "../shared/tokenizers/llm-jp-tokenizer-100k.ver3.0b1.model", err, sizeof err);
        if (!t) {
            fprintf(stderr, "fuzz_tok_encode: %s (set SAEFLOW_FUZZ_TOKENIZER)\n", err);
            abort();
        }
    }
    exercise(t, (const char *)data, size);
    return 0;
}
#endif
