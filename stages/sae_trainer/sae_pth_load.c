/* sae_pth_load.c — llm-jp-sae's 2025-03 release file (sae.pth, the SparseAutoEncoder's state dict)
 * as an sae_model. The file records neither k nor the input normalisation; the code that wrote it
 * saved them only in its directory names (.../k_32/nl_Scalar/ckpt_0988240/lr_0.001/sae.pth, where
 * Scalar means x / ||x||), so they come from the caller or from those names, and m->norm_from says
 * which. Apart from sae_pth.c (the reader) so that the fuzzer links the reader alone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sae_pth.h"
#include "saeflow.h"

/* The value of the last path component "PREFIXvalue/" (a directory the file is under), or NULL. */
static const char *path_value(const char *path, const char *prefix, char *out, size_t cap) {
    const char *found = NULL;
    size_t pl = strlen(prefix);
    for (const char *c = path; *c; c++)
        if ((c == path || c[-1] == '/') && !strncmp(c, prefix, pl) && strchr(c, '/')) found = c + pl;
    if (!found) return NULL;
    size_t len = (size_t)(strchr(found, '/') - found);
    if (len == 0 || len >= cap) return NULL;
    memcpy(out, found, len);
    out[len] = '\0';
    return out;
}

static int pth_tensor(sae_pth *p, const char *path, const char *name, int64_t rows, int64_t cols, float *dst) {
    const sae_pth_tensor *t = sae_pth_find(p, name);
    if (!t) return sf_fail("%s: no tensor '%s'", path, name);
    int ok = cols ? t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols : t->ndim == 1 && t->shape[0] == rows;
    if (!ok) return sf_fail("%s: tensor '%s' has an unexpected shape (not [n, d], [n] or [d])", path, name);
    return sae_pth_read(p, t, dst);
}

int sae_pth_dir_norm(const char *path, sae_norm_mode *norm, char *from, size_t cap) {
    char val[32];
    if (!path_value(path, "nl_", val, sizeof val)) return SF_DONE;
    if (!strcmp(val, "Scalar")) *norm = SAE_NORM_UNIT;
    else if (!strcmp(val, "None")) *norm = SAE_NORM_NONE;
    else
        return sf_fail("%s: normalisation nl_%s is not supported (llm-jp-sae's Standardization is (x - mean) / "
                       "std per token; saeflow has unit, scalar and none)", path, val);
    snprintf(from, cap, "from the directory nl_%s (llm-jp-sae 2025-03: Scalar is x/||x||)", val);
    return SF_OK;
}

int sae_pth_load(sae_model *m, const char *path, int k, int norm) {
    memset(m, 0, sizeof *m);
    char val[32], from_k[40] = "", from_norm[112];
    if (k <= 0) {
        char *end;
        if (!path_value(path, "k_", val, sizeof val) || (k = (int)strtol(val, &end, 10)) <= 0 || *end)
            return sf_fail("%s: sae.pth records no k (llm-jp-sae's 2025-03 code saves it only in the directory "
                           "name k_N): state it, e.g. saeflow sae convert %s OUT --k 32", path, path);
        snprintf(from_k, sizeof from_k, "k from the directory k_%d", k);
    }
    if (norm < 0) {
        sae_norm_mode nm = SAE_NORM_NONE;
        int rc = sae_pth_dir_norm(path, &nm, from_norm, sizeof from_norm);
        if (rc == SF_DONE)
            return sf_fail("%s: sae.pth records no input normalisation (llm-jp-sae's 2025-03 code saves it only in "
                           "the directory name nl_Scalar, nl_None or nl_Standardization; its default Scalar is "
                           "x/||x||): state it, e.g. saeflow sae convert %s OUT --normalize unit", path, path);
        if (rc != SF_OK) return SF_ERR;
        norm = (int)nm;
    } else if (norm == SAE_NORM_SCALAR) {
        return sf_fail("%s: normalize scalar needs its dataset statistic, which llm-jp-sae's 2025-03 code never "
                       "had (its options: Scalar = x/||x|| = unit, None = none)", path);
    } else {
        snprintf(from_norm, sizeof from_norm, "stated by the user");
    }
    sae_pth *p = sae_pth_open(path);
    if (!p) return SF_ERR;
    const sae_pth_tensor *we = sae_pth_find(p, "encoder.weight");
    if (!we || we->ndim != 2 || sae_pth_count(p) != 4) {
        sae_pth_close(p);
        return sf_fail("%s: not llm-jp-sae's 2025-03 SparseAutoEncoder state dict (exactly encoder.weight [n,d], "
                       "encoder.bias [n], W_dec [n,d], b_dec [d])", path);
    }
    int64_t n = we->shape[0], d = we->shape[1];
    if (n > INT32_MAX || d > INT32_MAX || sae_model_alloc(m, (int)d, (int)n, k) != SF_OK) {
        sae_pth_close(p);
        return sf_fail("%s: cannot hold an SAE of d %lld, n %lld, k %d: %s", path, (long long)d, (long long)n, k,
                       sf_last_error());
    }
    int rc = pth_tensor(p, path, "encoder.weight", n, d, m->W_enc);
    if (rc == SF_OK) rc = pth_tensor(p, path, "encoder.bias", n, 0, m->b_enc);
    if (rc == SF_OK) rc = pth_tensor(p, path, "W_dec", n, d, m->W_dec);
    if (rc == SF_OK) rc = pth_tensor(p, path, "b_dec", d, 0, m->b_dec);
    sae_pth_close(p);
    if (rc != SF_OK) {
        sae_model_free(m);
        return SF_ERR;
    }
    m->norm = (sae_norm_mode)norm;
    m->norm_scale = 1.0f;
    snprintf(m->layout, sizeof m->layout, "llm-jp-sae 2025-03 sae.pth (SparseAutoEncoder, torch.save state dict)");
    snprintf(m->norm_from, sizeof m->norm_from, "%s%s%s", from_norm, from_k[0] ? "; " : "", from_k);
    return SF_OK;
}
