/* sae_files.c — an SAE's files: the names of its normalisations and layouts, saving and loading
 * the paper's, sparsify's and SAELens' layouts (and, through sae_pth_load.c, llm-jp-sae's sae.pth),
 * and the check that an SAE fits the activations it is given (its recorded hook, checkpoint and
 * model). Apart from sae_model.c (the model's arithmetic), which needs none of this. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "saeflow.h"
#include "sf_output.h"
#include "sf_safetensors.h"
#include "sf_trained_on.h"
#include "sae_internal.h"
#include "sae_pth.h"

/* ---------------------------------------------------------------------------------------------- */
/* Names                                                                                           */

static const char *const sae_norm_names[] = {"none", "unit", "scalar"};
static const char *const sae_layout_names[] = {"paper", "sparsify", "saelens"};

const char *sae_norm_name(sae_norm_mode mode) {
    return (unsigned)mode < 3 ? sae_norm_names[mode] : "?";
}

int sae_norm_parse(const char *name, sae_norm_mode *out) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, sae_norm_names[i])) {
            *out = (sae_norm_mode)i;
            return SF_OK;
        }
    return sf_fail("sae: unknown normalisation '%s' (none, unit, scalar)", name);
}

int sae_layout_parse(const char *name, sae_layout *out) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, sae_layout_names[i])) {
            *out = (sae_layout)i;
            return SF_OK;
        }
    return sf_fail("sae: unknown layout '%s' (paper, sparsify, saelens)", name);
}

/* ---------------------------------------------------------------------------------------------- */
/* Files                                                                                           */

/* The file names of each layout: config, weights, then tensor names for
 * W_enc, b_enc, W_dec, b_dec, and whether W_enc / W_dec are stored transposed ([d, n]). */
typedef struct sae_layout_desc {
    const char *config, *weights;
    const char *w_enc, *b_enc, *w_dec, *b_dec;
    int enc_transposed, dec_transposed;
} sae_layout_desc;

static const sae_layout_desc sae_layouts[3] = {
    {"config.json", "model.safetensors", "encoder.weight", "encoder.bias", "decoder.weight", "b_dec", 0, 1},
    {"cfg.json", "sae.safetensors", "encoder.weight", "encoder.bias", "W_dec", "b_dec", 0, 0},
    {"cfg.json", "sae_weights.safetensors", "W_enc", "b_enc", "W_dec", "b_dec", 1, 0},
};

static void sae_transpose(const float *src, int rows, int cols, float *dst) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) dst[(size_t)c * rows + r] = src[(size_t)r * cols + c];
}

/* Writes JSON atomically and durably (sf_write_file_atomic). */
static int sae_write_json(const char *path, json_t *j) {
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text) return sf_fail("sae: out of memory writing %s", path);
    int rc = sf_write_file_atomic(path, text, strlen(text));
    free(text);
    return rc;
}

static int sae_save_layout(const sae_model *m, const char *dir, sae_layout layout, const char *extra_json);

/* SAELens' normalize_activations "constant_norm_rescale" feeds the SAE x sqrt(d) / ||x|| and scales
 * the output back by ||x|| / sqrt(d); ours feeds x / ||x||. With W_enc / sqrt(d), W_dec sqrt(d) and
 * b_dec sqrt(d) the pre-activations, so the codes, are the same and so is x_hat in the raw space.
 * to_saelens 1 converts ours to SAELens', 0 back. */
static void sae_fold_unit(sae_model *m, int to_saelens) {
    float s = sqrtf((float)m->d), in = to_saelens ? 1.0f / s : s, out = to_saelens ? s : 1.0f / s;
    for (size_t i = 0; i < (size_t)m->n * m->d; i++) {
        m->W_enc[i] *= in;
        m->W_dec[i] *= out;
    }
    for (int j = 0; j < m->d; j++) m->b_dec[j] *= out;
}

/* sparsify and SAELens apply no scalar normalisation of their own: fold it into the weights,
 * W_enc s, W_dec / s, b_dec / s (the same encodings of raw inputs, outputs in the raw space). A unit
 * normalisation goes to SAELens as its constant_norm_rescale (sae_fold_unit); sparsify has nothing
 * like it and no weights can fold a per-token division: its export keeps our weights, for inputs
 * x / ||x|| (cfg.json says so; saeflow sae convert warns). */
int sae_save(const sae_model *m, const char *dir, sae_layout layout, const char *extra_json) {
    if (layout == SAE_LAYOUT_SPARSIFY && m->norm == SAE_NORM_UNIT)
        sf_log(SF_LOG_WARN, "%s: sparsify applies no input normalisation and this SAE's (x/||x|| per token) cannot "
               "be folded into weights: feed this export normalised activations (its cfg.json's saeflow_input says "
               "so), or use the SAELens export, which normalises itself", dir);
    int scalar = layout != SAE_LAYOUT_PAPER && m->norm == SAE_NORM_SCALAR;
    int unit = layout == SAE_LAYOUT_SAELENS && m->norm == SAE_NORM_UNIT;
    if (!scalar && !unit) return sae_save_layout(m, dir, layout, extra_json);
    sae_model f;
    if (sae_model_alloc(&f, m->d, m->n, m->k) != SF_OK) return SF_ERR;
    f.norm = unit ? SAE_NORM_UNIT : SAE_NORM_NONE; /* a scalar one is in the weights now */
    f.norm_scale = 1.0f;
    float s = scalar ? m->norm_scale : 1.0f;
    for (size_t i = 0; i < (size_t)m->n * m->d; i++) {
        f.W_enc[i] = m->W_enc[i] * s;
        f.W_dec[i] = m->W_dec[i] / s;
    }
    memcpy(f.b_enc, m->b_enc, (size_t)m->n * sizeof(float));
    for (int j = 0; j < m->d; j++) f.b_dec[j] = m->b_dec[j] / s;
    if (unit) sae_fold_unit(&f, 1);
    int rc = sae_save_layout(&f, dir, layout, extra_json);
    sae_model_free(&f);
    return rc;
}

static int sae_save_layout(const sae_model *m, const char *dir, sae_layout layout, const char *extra_json) {
    if ((unsigned)layout > 2) return sf_fail("sae_save: bad layout");
    const sae_layout_desc *L = &sae_layouts[layout];
    if (sf_mkdirs(dir) != SF_OK) return SF_ERR;

    json_t *cfg = json_object();
    if (extra_json && *extra_json) {
        json_error_t err;
        json_t *extra = json_loads(extra_json, 0, &err);
        if (!json_is_object(extra)) {
            json_decref(extra);
            json_decref(cfg);
            return sf_fail("sae_save: extra metadata is not a JSON object: %s", err.text);
        }
        json_object_update(cfg, extra);
        json_decref(extra);
    }
    json_object_set_new(cfg, "d_in", json_integer(m->d));
    json_object_set_new(cfg, "k", json_integer(m->k));
    json_object_set_new(cfg, "saeflow_normalize", json_string(sae_norm_name(m->norm)));
    json_object_set_new(cfg, "saeflow_norm_scale", json_real(m->norm_scale));
    if (layout == SAE_LAYOUT_PAPER) {
        json_object_set_new(cfg, "num_latents", json_integer(m->n));
        json_object_set_new(cfg, "model_type", json_string("topk_sae"));
        json_object_set_new(cfg, "architectures", json_pack("[s]", "TopKSAE"));
        json_object_set_new(cfg, "torch_dtype", json_string("float32"));
    } else if (layout == SAE_LAYOUT_SPARSIFY) {
        json_object_set_new(cfg, "num_latents", json_integer(m->n));
        json_object_set_new(cfg, "expansion_factor", json_integer(m->n / m->d));
        json_object_set_new(cfg, "normalize_decoder", json_true());
        json_object_set_new(cfg, "signed", json_false());
        json_object_set_new(cfg, "multi_topk", json_false());
        json_object_set_new(cfg, "skip_connection", json_false());
        if (m->norm == SAE_NORM_UNIT)
            json_object_set_new(cfg, "saeflow_input",
                                json_string("x / ||x|| per token: sparsify applies no input normalisation and a "
                                            "per-token one cannot be folded into weights; normalise the "
                                            "activations before encode()"));
    } else {
        json_object_set_new(cfg, "d_sae", json_integer(m->n));
        json_object_set_new(cfg, "architecture", json_string("topk"));
        json_object_set_new(cfg, "dtype", json_string("float32"));
        json_object_set_new(cfg, "device", json_string("cpu"));
        json_object_set_new(cfg, "apply_b_dec_to_input", json_true());
        json_object_set_new(cfg, "rescale_acts_by_decoder_norm", json_false());
        /* unit: weights folded for SAELens' own per-token rescale (sae_save); scalar: folded whole */
        json_object_set_new(cfg, "normalize_activations",
                            json_string(m->norm == SAE_NORM_UNIT ? "constant_norm_rescale" : "none"));
        if (!json_object_get(cfg, "metadata"))
            json_object_set_new(cfg, "metadata", json_object());
        json_t *md = json_object_get(cfg, "metadata");
        if (json_is_object(md)) json_object_set_new(md, "sae_lens_version", json_string("6.0.0"));
    }

    /* The config marks a directory as holding a model: it goes last, after the weights are on disk,
     * and an older one goes first (a full disk must not leave a config describing weights that are
     * not there, or not these). */
    char path[4200], config_path[4200];
    snprintf(config_path, sizeof config_path, "%s/%s", dir, L->config);
    if (unlink(config_path) == 0 ? sf_sync_parent(config_path) != SF_OK
                                 : errno != ENOENT && sf_fail("cannot remove %s: %s", config_path, strerror(errno))) {
        json_decref(cfg);
        return SF_ERR;
    }
    int rc;

    size_t nd = (size_t)m->n * m->d;
    /* At most one matrix is stored transposed in each layout. */
    const float *enc = m->W_enc, *dec = m->W_dec;
    float *tmat = NULL;
    if (L->enc_transposed || L->dec_transposed) {
        tmat = sae_alloc_floats(nd);
        if (!tmat) return sf_fail("sae_save: out of memory");
        sae_transpose(L->enc_transposed ? m->W_enc : m->W_dec, m->n, m->d, tmat);
        if (L->enc_transposed) enc = tmat;
        else dec = tmat;
    }
    int64_t nd_shape[2] = {m->n, m->d}, dn_shape[2] = {m->d, m->n};
    int64_t n_shape[1] = {m->n}, d_shape[1] = {m->d};
    sf_st_writer *w = sf_st_writer_new();
    sf_st_writer_add(w, L->w_enc, SF_F32, 2, L->enc_transposed ? dn_shape : nd_shape, enc);
    sf_st_writer_add(w, L->b_enc, SF_F32, 1, n_shape, m->b_enc);
    sf_st_writer_add(w, L->w_dec, SF_F32, 2, L->dec_transposed ? dn_shape : nd_shape, dec);
    sf_st_writer_add(w, L->b_dec, SF_F32, 1, d_shape, m->b_dec);
    sf_st_writer_meta(w, "format", "pt");
    snprintf(path, sizeof path, "%s/%s", dir, L->weights);
    rc = sf_st_writer_save(w, path, NULL);
    sf_st_writer_free(w);
    free(tmat);
    if (rc == SF_OK) rc = sae_write_json(config_path, cfg);
    json_decref(cfg);
    return rc;
}

/* Copies one tensor of the file into dst ([rows, cols], transposed from [cols, rows] if asked),
 * checking name, shape and dtype. */
static int sae_read_tensor(const sf_st_file *f, const char *file, const char *name, int64_t rows,
                           int64_t cols, int transposed, float *dst) {
    const sf_st_tensor *t = sf_st_find(f, name);
    if (!t) return sf_fail("%s: no tensor '%s'", file, name);
    int64_t want0 = transposed ? cols : rows, want1 = transposed ? rows : cols;
    int ok = cols == 0 ? (t->t.ndim == 1 && t->t.shape[0] == rows)
                       : (t->t.ndim == 2 && t->t.shape[0] == want0 && t->t.shape[1] == want1);
    if (!ok) return sf_fail("%s: tensor '%s' has an unexpected shape", file, name);
    if (t->t.dtype != SF_F32 && t->t.dtype != SF_F16 && t->t.dtype != SF_BF16 && t->t.dtype != SF_F64)
        return sf_fail("%s: tensor '%s' is %s, not a float type", file, name, sf_dtype_name(t->t.dtype));
    size_t count = (size_t)rows * (size_t)(cols ? cols : 1);
    if (!transposed) {
        sf_convert_to_f32(dst, t->t.data, t->t.dtype, count);
        return SF_OK;
    }
    float *tmp = sae_alloc_floats(count);
    if (!tmp) return sf_fail("%s: out of memory", file);
    sf_convert_to_f32(tmp, t->t.data, t->t.dtype, count);
    sae_transpose(tmp, (int)cols, (int)rows, dst);
    free(tmp);
    return SF_OK;
}

static int sae_json_int(json_t *cfg, const char *key, int64_t *out) {
    json_t *v = json_object_get(cfg, key);
    if (!json_is_integer(v)) return SF_ERR;
    *out = json_integer_value(v);
    return SF_OK;
}

/* The normalisation of a state dict of llm-jp-sae's 2025-03 code converted to safetensors: its files
 * record none, the directory names that code saved under do (nl_Scalar = x/||x||, nl_None). */
static int sae_legacy_norm(const char *dir, sae_norm_mode *norm, char *from, size_t cap) {
    char full[4200];
    if (!realpath(dir, full)) snprintf(full, sizeof full, "%s", dir);
    strncat(full, "/", sizeof full - strlen(full) - 1);
    int rc = sae_pth_dir_norm(full, norm, from, cap);
    if (rc != SF_DONE) return rc;
    return sf_fail("%s: a state dict of llm-jp-sae's 2025-03 SparseAutoEncoder (encoder.weight, W_dec [n,d]) "
                   "converted to safetensors: nothing records its input normalisation (that code's --nl: Scalar, "
                   "its default, is x/||x||; None; Standardization) and loading it with the wrong one gives wrong "
                   "codes silently. State it: saeflow sae convert %s OUT --normalize unit|none",
                   dir, dir);
}

int sae_load(sae_model *m, const char *dir) {
    return sae_load_as(m, dir, 0, -1);
}

int sae_load_as(sae_model *m, const char *dir, int k_given, int norm_given) {
    memset(m, 0, sizeof *m);
    size_t dl = strlen(dir);
    if (dl >= 4096) return sf_fail("sae: directory name too long");
    char path[4200];
    /* llm-jp-sae's 2025-03 release: sae.pth, named or in the directory */
    struct stat sb;
    if (dl > 4 && !strcmp(dir + dl - 4, ".pth") && stat(dir, &sb) == 0 && S_ISREG(sb.st_mode))
        return sae_pth_load(m, dir, k_given, norm_given);
    int layout = -1;
    for (int l = 0; l < 3 && layout < 0; l++) {
        snprintf(path, sizeof path, "%s/%s", dir, sae_layouts[l].weights);
        if (access(path, R_OK) == 0) layout = l;
    }
    if (layout < 0) {
        snprintf(path, sizeof path, "%s/sae.pth", dir);
        if (access(path, R_OK) == 0) return sae_pth_load(m, path, k_given, norm_given);
        return sf_fail("%s: no model.safetensors, sae.safetensors, sae_weights.safetensors or sae.pth", dir);
    }
    const sae_layout_desc *L = &sae_layouts[layout];

    snprintf(path, sizeof path, "%s/%s", dir, L->config);
    json_error_t jerr;
    json_t *cfg = json_load_file(path, 0, &jerr);
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        if (layout == SAE_LAYOUT_SPARSIFY && access(path, F_OK) != 0)
            return sf_fail("%s: sae.safetensors without cfg.json: k and the input normalisation are recorded nowhere "
                           "(a state dict converted to safetensors?). State them: saeflow sae convert %s OUT --k K "
                           "--normalize unit|none", dir, dir);
        return sf_fail("%s: %s (line %d)", path, jerr.text, jerr.line);
    }
    int64_t k = 0;
    if (k_given > 0) k = k_given;
    else if (sae_json_int(cfg, "k", &k) != SF_OK) {
        json_decref(cfg);
        return sf_fail("%s: no integer 'k' (not a TopK SAE? state it: saeflow sae convert %s OUT --k K)", path, dir);
    }
    sae_norm_mode norm = SAE_NORM_NONE;
    float norm_scale = 1.0f;
    char layout_name[sizeof m->layout], norm_from[sizeof m->norm_from] = "";
    int saelens_rescale = 0; /* SAELens' constant_norm_rescale: x sqrt(d) / ||x||, our unit with scaled weights */
    json_t *jn = json_object_get(cfg, "saeflow_normalize");
    json_t *na = json_object_get(cfg, "normalize_activations");
    if (norm_given >= 0) {
        norm = (sae_norm_mode)norm_given;
        snprintf(norm_from, sizeof norm_from, "stated by the user");
    } else if (json_is_string(jn)) {
        if (sae_norm_parse(json_string_value(jn), &norm) != SF_OK) {
            json_decref(cfg);
            return SF_ERR;
        }
        snprintf(norm_from, sizeof norm_from, "%s saeflow_normalize", L->config);
    }
    if (layout == SAE_LAYOUT_SAELENS && json_is_string(na) && strcmp(json_string_value(na), "none") != 0) {
        if (strcmp(json_string_value(na), "constant_norm_rescale") != 0) {
            int rc = sf_fail("%s: normalize_activations '%s' is not supported (only 'none' and "
                             "'constant_norm_rescale')", path, json_string_value(na));
            json_decref(cfg);
            return rc;
        }
        saelens_rescale = 1;
        if (norm_given < 0) {
            norm = SAE_NORM_UNIT;
            snprintf(norm_from, sizeof norm_from, "cfg.json normalize_activations constant_norm_rescale");
        }
    }
    int native_sparsify = json_object_get(cfg, "normalize_decoder") != NULL; /* sparsify's own cfg.json */
    /* What the other libraries can save that is not this TopK SAE's forward: refused, not misread. */
    json_t *arch = json_object_get(cfg, layout == SAE_LAYOUT_SAELENS ? "architecture" : "activation");
    const char *other = json_is_string(arch) && strcmp(json_string_value(arch), "topk") != 0 ? json_string_value(arch)
                        : layout == SAE_LAYOUT_SPARSIFY && json_is_true(json_object_get(cfg, "transcode")) ? "transcode"
                        : layout == SAE_LAYOUT_SPARSIFY && json_is_true(json_object_get(cfg, "skip_connection"))
                            ? "skip_connection"
                            : NULL;
    if (other) {
        int rc = sf_fail("%s: a '%s' sparse coder, not a TopK SAE (z = TopK(ReLU(W_enc (x - b_dec) + b_enc))): "
                         "saeflow cannot encode with it", path, other);
        json_decref(cfg);
        return rc;
    }
    /* SAELens' TopK option: pre-activations times ||W_dec row||, codes divided by it before decoding */
    int saelens_dec_norm = layout == SAE_LAYOUT_SAELENS && json_is_true(json_object_get(cfg, "rescale_acts_by_decoder_norm"));
    /* SAELens without apply_b_dec_to_input encodes x, not x - b_dec */
    int saelens_raw_in = layout == SAE_LAYOUT_SAELENS && json_is_false(json_object_get(cfg, "apply_b_dec_to_input"));
    const char *hk, *ck, *md;
    sf_trained_on_get(cfg, &md, &ck, &hk, NULL);
    if (!hk) hk = json_string_value(json_object_get(cfg, "hook_name"));
    if (!hk) hk = json_string_value(json_object_get(json_object_get(cfg, "metadata"), "hook_name"));
    char hook[sizeof m->hook] = "", checkpoint[sizeof m->checkpoint] = "", model[sizeof m->model] = "";
    if (hk) snprintf(hook, sizeof hook, "%s", hk);
    int ours = json_is_string(jn) || json_object_get(cfg, SF_TRAINED_ON_KEY) != NULL;
    if (ck) snprintf(checkpoint, sizeof checkpoint, "%s", ck);
    if (md) snprintf(model, sizeof model, "%s", md);
    json_t *js = json_object_get(cfg, "saeflow_norm_scale");
    if (json_is_number(js)) norm_scale = (float)json_number_value(js);
    json_decref(cfg);

    snprintf(path, sizeof path, "%s/%s", dir, L->weights);
    sf_st_file *f = sf_st_open(path);
    if (!f) return SF_ERR;
    /* Which code wrote it, and so the normalisation when the config does not state it. */
    if (layout == SAE_LAYOUT_PAPER && sf_st_find(f, "W_dec") && !sf_st_find(f, "decoder.weight")) {
        L = &sae_layouts[SAE_LAYOUT_SPARSIFY]; /* the 2025-03 tensor names, in a save_pretrained folder */
        snprintf(layout_name, sizeof layout_name, "llm-jp-sae 2025-03 SparseAutoEncoder state dict in model.safetensors");
        if (!norm_from[0] && sae_legacy_norm(dir, &norm, norm_from, sizeof norm_from) != SF_OK) goto fail;
    } else if (layout == SAE_LAYOUT_PAPER) {
        snprintf(layout_name, sizeof layout_name, "%s", ours ? "saeflow, in llm-jp-sae's TopKSAE layout (config.json + "
                 "model.safetensors)" : "llm-jp-sae 2025-09 TopKSAE (save_pretrained: config.json + model.safetensors)");
        if (!norm_from[0]) {
            norm = SAE_NORM_UNIT;
            snprintf(norm_from, sizeof norm_from, "llm-jp-sae's 2025-09 code always normalises x/||x||");
        }
    } else if (layout == SAE_LAYOUT_SPARSIFY && !native_sparsify && !norm_from[0]) {
        snprintf(layout_name, sizeof layout_name, "llm-jp-sae 2025-03 SparseAutoEncoder state dict in sae.safetensors");
        if (sae_legacy_norm(dir, &norm, norm_from, sizeof norm_from) != SF_OK) goto fail;
    } else if (layout == SAE_LAYOUT_SPARSIFY) {
        snprintf(layout_name, sizeof layout_name, "%s", ours ? "saeflow export, EleutherAI sparsify layout (cfg.json + "
                 "sae.safetensors)" : "EleutherAI sparsify (cfg.json + sae.safetensors)");
        if (!norm_from[0]) snprintf(norm_from, sizeof norm_from, "sparsify has none");
    } else {
        snprintf(layout_name, sizeof layout_name, "%s", ours ? "saeflow export, SAELens v6 layout (cfg.json + "
                 "sae_weights.safetensors)" : "SAELens v6 (cfg.json + sae_weights.safetensors)");
        if (!norm_from[0]) snprintf(norm_from, sizeof norm_from, "cfg.json normalize_activations none");
    }
    /* Shapes come from the weights; b_dec gives d, the encoder bias n. */
    const sf_st_tensor *tb = sf_st_find(f, L->b_dec), *te = sf_st_find(f, L->b_enc);
    if (!tb || !te || tb->t.ndim != 1 || te->t.ndim != 1) {
        sf_fail("%s: missing or malformed '%s' / '%s'", path, L->b_dec, L->b_enc);
        goto fail;
    }
    int64_t d = tb->t.shape[0], n = te->t.shape[0];
    if (d > SAE_MAX_D || n > SAE_MAX_N || k > n) {
        sf_fail("%s: unsupported shape d=%lld n=%lld k=%lld", path, (long long)d, (long long)n, (long long)k);
        goto fail;
    }
    if (sae_model_alloc(m, (int)d, (int)n, (int)k) != SF_OK) goto fail;
    m->norm = norm;
    m->norm_scale = norm == SAE_NORM_SCALAR ? norm_scale : 1.0f;
    memcpy(m->hook, hook, sizeof hook);
    memcpy(m->checkpoint, checkpoint, sizeof checkpoint);
    memcpy(m->model, model, sizeof model);
    memcpy(m->layout, layout_name, sizeof layout_name);
    memcpy(m->norm_from, norm_from, sizeof norm_from);
    int rc = SF_OK;
    if (sae_read_tensor(f, path, L->w_enc, n, d, L->enc_transposed, m->W_enc) != SF_OK ||
        sae_read_tensor(f, path, L->b_enc, n, 0, 0, m->b_enc) != SF_OK ||
        sae_read_tensor(f, path, L->w_dec, n, d, L->dec_transposed, m->W_dec) != SF_OK ||
        sae_read_tensor(f, path, L->b_dec, d, 0, 0, m->b_dec) != SF_OK) {
        rc = SF_ERR;
        sae_model_free(m);
    }
    sf_st_close(f);
    if (rc == SF_OK && saelens_raw_in) /* W_enc x + b_enc = W_enc (x - b_dec) + (b_enc + W_enc b_dec) */
        for (int i = 0; i < m->n; i++) {
            double dot = 0;
            for (int j = 0; j < m->d; j++) dot += (double)m->W_enc[(size_t)i * m->d + j] * m->b_dec[j];
            m->b_enc[i] += (float)dot;
        }
    if (rc == SF_OK && saelens_rescale) sae_fold_unit(m, 0);
    if (rc == SF_OK && saelens_dec_norm) /* folded as SAELens' own fold_W_dec_norm does: the same codes */
        for (int i = 0; i < m->n; i++) {
            float *wd = m->W_dec + (size_t)i * m->d, *we = m->W_enc + (size_t)i * m->d, s2 = 0;
            for (int j = 0; j < m->d; j++) s2 += wd[j] * wd[j];
            float s = sqrtf(s2);
            for (int j = 0; j < m->d; j++) we[j] *= s, wd[j] = s > 0 ? wd[j] / s : 0;
            m->b_enc[i] *= s; /* a zero row: pre-activation 0, as in SAELens */
        }
    return rc;
fail:
    sf_st_close(f);
    return SF_ERR;
}

/* ---------------------------------------------------------------------------------------------- */
/* What the SAE reads                                                                              */

/* Two model directory names: the same string, or the same directory here. Names that do not both
 * exist here (a model recorded on another host) are compared as strings. */
static int same_model(const char *a, const char *b) {
    struct stat sa, sb;
    if (strcmp(a, b) == 0) return 1;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int sae_check_source(const sae_model *m, const char *sae_dir, const char *hook, const char *checkpoint,
                     const char *model, int accept) {
    const char *what = NULL, *mine = NULL, *theirs = NULL;
    if (m->hook[0] && hook && *hook && !sf_same_hook(m->hook, hook)) what = "hook", mine = m->hook, theirs = hook;
    else if (m->checkpoint[0] && checkpoint && *checkpoint && strcmp(m->checkpoint, checkpoint) != 0)
        what = "checkpoint", mine = m->checkpoint, theirs = checkpoint;
    else if (m->model[0] && model && *model && !same_model(m->model, model))
        what = "model", mine = m->model, theirs = model;
    if (!what) return SF_OK;
    if (accept) {
        sf_log(SF_LOG_WARN, "the SAE %s was trained on %s %s, these activations are of %s %s: used anyway "
               "(accept_sae_mismatch = true)", sae_dir, what, mine, what, theirs);
        return SF_OK;
    }
    return sf_fail("the SAE %s was trained on %s %s, but these activations are of %s %s: its features mean "
                   "nothing there. Use the SAE of %s %s (or activations of %s %s); to use it anyway, set "
                   "accept_sae_mismatch = true",
                   sae_dir, what, mine, what, theirs, what, theirs, what, mine);
}
