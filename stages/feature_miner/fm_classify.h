/* fm_classify.h — `saeflow classify DIR... [--json]`: the language (every rule) and granularity
 * of every feature file in the paper's schema (llm-jp-sae's released docs/data/<ckpt>/<id>.json,
 * and feature_miner's features/<id>.json), judged by fm_judge exactly as the miner judges its own. */
#ifndef FM_CLASSIFY_H
#define FM_CLASSIFY_H

#define FM_CLASSIFY_ARGS "DIR... [--json]"

int fm_classify_main(int argc, char **argv);

#endif
