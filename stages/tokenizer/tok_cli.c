/* tok_cli.c — `saeflow tokenize`: a spm_encode-like tool for researchers and tests.
 *
 *   saeflow tokenize TOKENIZER_FILE [--tokens] [--special] [--decode]
 *
 * Reads UTF-8 lines on stdin and prints, per line, the token ids separated by spaces
 * (--tokens: the vocabulary pieces instead; --special: add BOS/EOS as the tokenizer does;
 * --decode: read ids per line and print the decoded text). The newline ending a line is not
 * part of the text, as with spm_encode. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok.h"

static int tok_cli_usage_to(FILE *out, int rc) {
    fprintf(out, "usage: saeflow tokenize TOKENIZER_FILE [--tokens] [--special] [--decode]\n"
                    "  reads lines on stdin, prints token ids (or pieces) per line\n");
    return rc;
}

static int tok_cli_usage(void) { return tok_cli_usage_to(stderr, 2); }

/* printf("%d") without the format parsing: ids are most of the output. */
static void tok_cli_put_id(int32_t id) {
    char buf[12], *p = buf + sizeof buf;
    uint32_t v = id < 0 ? 0u - (uint32_t)id : (uint32_t)id;
    do *--p = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    if (id < 0) *--p = '-';
    fwrite_unlocked(p, 1, (size_t)(buf + sizeof buf - p), stdout);
}

static int tok_cli_decode_line(const tok_tokenizer *t, char *line, tok_ids *ids) {
    ids->n = 0;
    for (char *p = line, *end; *p;) {
        long v = strtol(p, &end, 10);
        if (end == p) {
            if (*p == ' ' || *p == '\t' || *p == '\r') {
                p++;
                continue;
            }
            fprintf(stderr, "tokenize: not an id: %s\n", p);
            return -1;
        }
        if (v < 0 || v >= tok_vocab_size(t)) {
            fprintf(stderr, "tokenize: id %ld out of range\n", v);
            return -1;
        }
        if (ids->n == ids->cap) {
            size_t cap = ids->cap ? 2 * ids->cap : 256;
            int32_t *q = realloc(ids->ids, cap * sizeof *q);
            if (!q) return -1;
            ids->ids = q;
            ids->cap = cap;
        }
        ids->ids[ids->n++] = (int32_t)v;
        p = end;
    }
    size_t len;
    char *text = tok_decode(t, ids->ids, ids->n, 1, &len);
    if (!text) return -1;
    fwrite(text, 1, len, stdout);
    putchar('\n');
    free(text);
    return 0;
}

int tok_cli_main(int argc, char **argv) {
    const char *path = NULL;
    int tokens = 0, special = 0, decode = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return tok_cli_usage_to(stdout, 0);
        if (strcmp(argv[i], "--tokens") == 0) tokens = 1;
        else if (strcmp(argv[i], "--special") == 0) special = 1;
        else if (strcmp(argv[i], "--decode") == 0) decode = 1;
        else if (argv[i][0] == '-' && argv[i][1]) return tok_cli_usage();
        else if (!path) path = argv[i];
        else return tok_cli_usage();
    }
    if (!path) return tok_cli_usage();
    char err[512];
    tok_tokenizer *t = tok_load(path, err, sizeof err);
    if (!t) {
        fprintf(stderr, "tokenize: %s\n", err);
        return 1;
    }
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    tok_ids ids = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, stdin)) >= 0) {
        if (n > 0 && line[n - 1] == '\n') line[--n] = 0;
        if (decode) {
            rc = tok_cli_decode_line(t, line, &ids);
            continue;
        }
        if (tok_encode(t, line, (size_t)n, special ? TOK_ADD_SPECIAL : 0, &ids) != 0) {
            fprintf(stderr, "tokenize: out of memory\n");
            rc = -1;
            break;
        }
        for (size_t i = 0; i < ids.n; i++) { /* one thread: the unlocked stdio calls are safe */
            if (i) putchar_unlocked(' ');
            if (tokens) {
                size_t len;
                const char *p = tok_piece(t, ids.ids[i], &len);
                if (p) fwrite(p, 1, len, stdout);
            } else {
                tok_cli_put_id(ids.ids[i]);
            }
        }
        putchar('\n');
    }
    free(line);
    tok_ids_free(&ids);
    tok_free(t);
    if (fflush(stdout) != 0) rc = -1;
    return rc == 0 ? 0 : 1;
}
