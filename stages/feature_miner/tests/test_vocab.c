/* Token display strings: the tokenizer loaded through tok.h against the same vocabulary exported
 * by Debian's spm_export_vocab (read by our listing reader): every id shows the same string, except
 * that byte pieces <0xNN> of ASCII bytes show as the byte itself through tok.h.
 * usage: fm_test_vocab MODEL LISTING */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_output.h"
#include "saeflow.h"

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    fm_vocab tok, listing;
    if (fm_vocab_load(&tok, argv[1]) != SF_OK || fm_vocab_load(&listing, argv[2]) != SF_OK) {
        fprintf(stderr, "%s\n", sf_last_error());
        return 1;
    }
    int bad = 0, bytes = 0;
    if (tok.n != listing.n) fprintf(stderr, "FAIL: %d ids through tok.h, %d in the listing\n", tok.n, listing.n), bad++;
    if (tok.bos < 0 || tok.bos != listing.bos) fprintf(stderr, "FAIL: BOS %d vs %d\n", tok.bos, listing.bos), bad++;
    for (int i = 0; i < tok.n && i < listing.n && bad < 20; i++) {
        const char *want = listing.s[i];
        char byte[2] = {0, 0};
        unsigned v;
        if (strlen(want) == 6 && sscanf(want, "<0x%2X>", &v) == 1 && v < 0x80) {
            byte[0] = (char)v;
            want = byte;
            bytes++;
        }
        if (strcmp(tok.s[i], want) != 0) fprintf(stderr, "FAIL: id %d: tok.h \"%s\", listing \"%s\"\n", i, tok.s[i], want), bad++;
    }
    printf("%d ids compared (%d ASCII byte pieces)%s\n", tok.n, bytes, bad ? ": FAIL" : ": ok");
    fm_vocab_free(&tok);
    fm_vocab_free(&listing);
    return bad ? 1 : 0;
}
