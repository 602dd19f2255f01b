/* sae_cli.c — `saeflow sae info | convert`: show an SAE in any layout saeflow reads (ours,
 * llm-jp-sae's 2025-09 TopKSAE and 2025-03 sae.pth, sparsify, SAELens v6) and rewrite it in another,
 * which is also how SAEs are exported to sparsify and SAELens. Registered by the sae_trainer plugin
 * (sae_stage.c's command table).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sae.h"
#include "saeflow.h"

int sae_cli_main(int argc, char **argv);

static int sae_cli_usage(FILE *out, int rc) {
    fprintf(out,
            "usage: saeflow sae info PATH [--k K] [--normalize unit|none]\n"
            "       saeflow sae convert IN OUT_DIR [--layout paper|sparsify|saelens] [--k K] [--normalize unit|none]\n"
            "PATH, IN: an SAE directory in any layout (saeflow's; llm-jp-sae's 2025-09 TopKSAE save_pretrained;\n"
            "  EleutherAI sparsify; SAELens v6), or llm-jp-sae's 2025-03 release file sae.pth (the file or its\n"
            "  directory; read without Python, a restricted unpickler refuses anything but a state dict of tensors)\n"
            "  info     which layout (the code and date that writes it), d_in, num_latents, k, the input\n"
            "           normalisation and where it came from\n"
            "  convert  rewrite IN in LAYOUT (default paper: config.json + model.safetensors) into OUT_DIR.\n"
            "           --layout saelens / sparsify export for those libraries so that their own forward gives our\n"
            "           codes: a unit (x/||x||) SAE gets SAELens' normalize_activations constant_norm_rescale\n"
            "           (weights scaled by sqrt(d_in)); a scalar one is folded into the weights; sparsify has no\n"
            "           input normalisation, so a unit SAE's sparsify export must be fed x/||x|| (its cfg.json\n"
            "           says so, and a warning is logged)\n"
            "  --k, --normalize  state what the files do not record: sae.pth keeps k and llm-jp-sae's --nl only in\n"
            "           its directory names (.../k_32/nl_Scalar/...; Scalar means x/||x||, i.e. unit); a 2025-03\n"
            "           state dict converted to safetensors records neither and is refused until stated\n");
    return rc;
}

int sae_cli_main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return sae_cli_usage(stdout, 0);
    int info = argc >= 3 && !strcmp(argv[1], "info"), convert = argc >= 4 && !strcmp(argv[1], "convert");
    if (!info && !convert) return sae_cli_usage(stderr, 2);
    sae_layout layout = SAE_LAYOUT_PAPER;
    int k = 0, norm = -1;
    for (int i = info ? 3 : 4; i < argc; i += 2) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        sae_norm_mode nm;
        if (!val) {
            fprintf(stderr, "saeflow sae: %s needs a value\n", opt);
            return 2;
        }
        if (convert && !strcmp(opt, "--layout")) {
            if (sae_layout_parse(val, &layout) != SF_OK) return fprintf(stderr, "saeflow sae: %s\n", sf_last_error()), 2;
        } else if (!strcmp(opt, "--k")) {
            long v = strtol(val, &end, 10);
            if (*end || v <= 0 || v > 1 << 20) {
                fprintf(stderr, "saeflow sae: --k %s is not a positive integer\n", val);
                return 2;
            }
            k = (int)v;
        } else if (!strcmp(opt, "--normalize")) {
            if (sae_norm_parse(val, &nm) != SF_OK) return fprintf(stderr, "saeflow sae: %s\n", sf_last_error()), 2;
            norm = (int)nm;
        } else {
            fprintf(stderr, "saeflow sae: unknown option %s\n", opt);
            return sae_cli_usage(stderr, 2);
        }
    }
    sae_model m;
    if (sae_load_as(&m, argv[2], k, norm) != SF_OK) {
        fprintf(stderr, "saeflow sae: %s\n", sf_last_error());
        return 1;
    }
    int rc = 0;
    if (info) {
        printf("layout %s\nd_in %d\nnum_latents %d\nk %d\nnormalize %s\nnorm_scale %g\nnormalize_from %s\n", m.layout,
               m.d, m.n, m.k, sae_norm_name(m.norm), m.norm_scale, m.norm_from);
    } else if (sae_save(&m, argv[3], layout, NULL) != SF_OK) {
        fprintf(stderr, "saeflow sae: %s\n", sf_last_error());
        rc = 1;
    }
    sae_model_free(&m);
    return rc;
}
