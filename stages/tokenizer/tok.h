/* tok.h — saeflow's tokenizer library (static library `tokenizer_lib`).
 *
 * Loads a Hugging Face `tokenizer.json` or a SentencePiece `.model` and turns UTF-8 text into
 * token ids and back, with the exact ids of the reference implementations (spm_encode for
 * .model files, Hugging Face tokenizers / transformers.js for tokenizer.json).
 *
 * A loaded tok_tokenizer is read-only: several threads may encode with it at once, each with
 * its own tok_ids (which carries that thread's scratch memory).
 */
#ifndef SAEFLOW_TOK_H
#define SAEFLOW_TOK_H

#include <stddef.h>
#include <stdint.h>

typedef struct tok_tokenizer tok_tokenizer;
typedef struct tok_scratch tok_scratch;

/* Token ids of one encode call plus reusable scratch. Zero-initialise, free with tok_ids_free. */
typedef struct tok_ids {
    int32_t *ids;
    size_t n, cap;
    tok_scratch *scratch;
} tok_ids;

/* The tokenizer file a spec names: a comma-separated list of candidates tried in order, each a
 * file, or a folder holding tokenizer.json (first) or tokenizer.model; e.g. "suite,suite/step-1"
 * takes the suite's tokenizer, else the checkpoint's own. Writes the first that exists into path
 * and returns 0; else -1 with a message listing what was tried and what to set. */
int tok_find(const char *spec, char *path, size_t cap, char *err, size_t errlen);
/* Loads the tokenizer tok_find finds for spec: a SentencePiece model (protobuf) or a
 * tokenizer.json (a file whose first non-blank byte is '{'). Returns NULL and writes a message
 * into err on failure. */
tok_tokenizer *tok_load(const char *spec, char *err, size_t errlen);
/* The same from bytes in memory (copied as needed; buf may be freed afterwards). */
tok_tokenizer *tok_load_mem(const void *buf, size_t len, char *err, size_t errlen);
void tok_free(tok_tokenizer *t);

enum { TOK_ADD_SPECIAL = 1 }; /* tok_encode flags: add BOS/EOS as the tokenizer defines them */

/* Encodes len bytes of text into out->ids (replacing its contents). Invalid UTF-8 is handled
 * as the reference does (U+FFFD or bytes). Returns 0, or -1 when out of memory or when the text
 * has a character the tokenizer cannot represent (a tokenizer.json Unigram model without unk_id). */
int tok_encode(const tok_tokenizer *t, const char *text, size_t len, int flags, tok_ids *out);
void tok_ids_free(tok_ids *v);

/* Decodes ids to text (malloc'd, NUL-terminated, *len bytes without the NUL). Special and
 * control tokens are left out when skip_special is set. NULL when out of memory. */
char *tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                 size_t *len);
/* The vocabulary entry of id as the tokenizer file spells it ("▁the", "Ġthe", "<0x0A>");
 * NULL if id is out of range or no token has it (a gap in a tokenizer.json's ids). Not
 * NUL-terminated: use *len. */
const char *tok_piece(const tok_tokenizer *t, int32_t id, size_t *len);
/* One token shown to a human (the feature miner): the text it stands for, with the
 * tokenizer's space marker turned back into ' ' and byte tokens into their bytes; bytes that
 * are not valid UTF-8 on their own are written as <0xNN>. Writes at most cap-1 bytes plus a
 * NUL into buf and returns the full length (like snprintf). */
size_t tok_token_display(const tok_tokenizer *t, int32_t id, char *buf, size_t cap);
/* Looks a piece up by its vocabulary spelling: its id or -1. */
int32_t tok_piece_id(const tok_tokenizer *t, const char *piece, size_t len);

int32_t tok_vocab_size(const tok_tokenizer *t);
int32_t tok_bos_id(const tok_tokenizer *t); /* -1 if none */
int32_t tok_eos_id(const tok_tokenizer *t); /* -1 if none */
/* "sentencepiece-unigram", "sentencepiece-bpe", "hf-bpe", "hf-unigram". */
const char *tok_kind(const tok_tokenizer *t);

/* `saeflow tokenize TOKENIZER_FILE [--tokens] [--special]` (see tok_cli.c). */
int tok_cli_main(int argc, char **argv);

#endif
