/* `tok-tokenize ARGS` = `saeflow tokenize ARGS`, without the runtime. */
#include "tok.h"

int main(int argc, char **argv) {
    argv[0] = "tokenize";
    return tok_cli_main(argc, argv);
}
