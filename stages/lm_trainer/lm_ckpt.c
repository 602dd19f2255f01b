/* lm_ckpt.c — Hugging Face checkpoints and the training state of lm_ckpt.h, written through
 * core/lib's safetensors writer and atomic file writes. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lm_ckpt.h"
#include "sf_safetensors.h"

uint64_t lm_hash_tokens(uint64_t h, const int32_t *tokens, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)tokens[i];
        for (int b = 0; b < 4; b++) h = (h ^ ((u >> (8 * b)) & 0xff)) * 0x100000001b3ull;
    }
    return h;
}

/* ---- config.json ---- */

char *lm_hf_config_text(const fw_config *c, const char *base_config, sf_dtype dtype) {
    json_t *j;
    if (base_config && *base_config) {
        json_error_t err;
        j = json_load_file(base_config, JSON_REJECT_DUPLICATES, &err);
        if (!j || !json_is_object(j)) {
            json_decref(j);
            sf_fail("%s: %s", base_config, j ? "not a JSON object" : err.text);
            return NULL;
        }
    } else if (!(j = json_object())) {
        sf_fail("out of memory building config.json");
        return NULL;
    }
    /* What our forward and HF's LlamaConfig read. A field the base config has keeps its value (c
     * was parsed from it); a missing one is written from c, so that both readers agree with what
     * was trained whatever defaults either applies. */
    char eps[32];
    snprintf(eps, sizeof eps, "%.7g", c->norm_eps); /* the float's shortest decimal, not its double widening */
    json_t *fields = json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:s, s:b, s:b, "
                               "s:f, s:f, s:i, s:b}",
                               "architectures", "LlamaForCausalLM", "model_type", "llama", "hidden_size", c->d_model,
                               "intermediate_size", c->d_ff, "num_hidden_layers", c->n_layers, "num_attention_heads",
                               c->n_heads, "num_key_value_heads", c->n_kv_heads, "head_dim", c->head_dim, "vocab_size",
                               c->vocab, "max_position_embeddings", c->max_pos, "rms_norm_eps", strtod(eps, NULL),
                               "rope_theta", c->rope_theta, "tie_word_embeddings", c->tied_embeddings, "hidden_act",
                               "silu", "attention_bias", 0, "mlp_bias", 0, "attention_dropout", 0.0,
                               "initializer_range", 0.02, "pretraining_tp", 1, "use_cache", 1);
    if (!fields) {
        json_decref(j);
        sf_fail("out of memory building config.json");
        return NULL;
    }
    json_object_update_missing(j, fields);
    json_decref(fields);
    json_object_set_new(j, "architectures", json_pack("[s]", "LlamaForCausalLM"));
    json_object_set_new(j, "model_type", json_string("llama"));
    if (!json_object_get(j, "rope_scaling")) /* the base's (linear, llama3 train too) stays as it was */
        json_object_set_new(j, "rope_scaling", json_null());
    if (c->rotary_dim != c->head_dim && !json_object_get(j, "partial_rotary_factor"))
        json_object_set_new(j, "partial_rotary_factor", json_real((double)c->rotary_dim / c->head_dim));
    if (c->bos_id >= 0) json_object_set_new(j, "bos_token_id", json_integer(c->bos_id));
    json_object_set_new(j, "torch_dtype", json_string(dtype == SF_BF16 ? "bfloat16" : "float32"));
    json_object_del(j, "sliding_window");
    json_object_del(j, "use_sliding_window");
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(j);
    if (!text) sf_fail("out of memory writing config.json");
    return text;
}

/* ---- checkpoints ---- */

int lm_ckpt_write(lm_model *m, const char *base_config, sf_dtype dtype, const char *dir, const char *const *meta) {
    if (dtype != SF_BF16 && dtype != SF_F32) return sf_fail("checkpoints are stored as BF16 or F32, not %s", sf_dtype_name(dtype));
    char tmp[4096], path[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.partial", dir) >= sizeof tmp) return sf_fail("path too long: %s", dir);
    if (sf_remove_tree(tmp) != SF_OK) return SF_ERR; /* a crash's leftover */
    if (mkdir(tmp, 0755) != 0) return sf_fail("cannot create %s: %s", tmp, strerror(errno));

    lm_tensor *t;
    size_t nt = lm_model_tensors(m, &t), total = lm_model_numel(m);
    uint16_t *half = NULL;
    char *config = NULL;
    int rc = SF_ERR;
    if (dtype == SF_BF16 && !(half = sf_alloc("the checkpoint's bf16 weights", total, sizeof *half))) goto out;
    sf_st_writer *w = sf_st_writer_new();
    size_t off = 0;
    for (size_t i = 0; i < nt; i++) {
        const void *data = t[i].w;
        if (half) {
            sf_convert_from_f32(half + off, SF_BF16, t[i].w, t[i].n);
            data = half + off;
        }
        sf_st_writer_add(w, t[i].name, dtype, t[i].ndim, t[i].shape, data);
        off += t[i].n;
    }
    sf_st_writer_meta(w, "format", "pt");
    for (size_t i = 0; meta && meta[i] && meta[i + 1]; i += 2) sf_st_writer_meta(w, meta[i], meta[i + 1]);
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    rc = sf_st_writer_save(w, path, NULL);
    sf_st_writer_free(w);
    if (rc != SF_OK) goto out;
    rc = SF_ERR;
    if (!(config = lm_hf_config_text(lm_model_config(m), base_config, dtype))) goto out;
    snprintf(path, sizeof path, "%s/config.json", tmp);
    if (sf_write_file_atomic(path, config, strlen(config)) != SF_OK) goto out;
    rc = sf_replace_dir(tmp, dir); /* the completion marker: dir appears whole, or not at all */
out:
    if (rc != SF_OK) {
        char err[1024];
        snprintf(err, sizeof err, "%s", sf_last_error());
        sf_remove_tree(tmp);
        sf_fail("%s", err);
    }
    free(half);
    free(config);
    return rc;
}

/* ---- training state ---- */

#define STATE_FORMAT "saeflow-lm-train-state-1"

int lm_state_save(const char *path, lm_model *m, const lm_adamw *a, const lm_train_pos *p, const char *settings) {
    lm_tensor *t;
    size_t nt = lm_model_tensors(m, &t);
    char *names = sf_alloc("training state tensor names", 2 * nt, 112);
    if (!names) return SF_ERR;
    sf_st_writer *w = sf_st_writer_new();
    size_t off = 0;
    for (size_t i = 0; i < nt; i++) {
        char *mn = names + 2 * i * 112, *vn = mn + 112;
        snprintf(mn, 112, "adamw.m.%s", t[i].name);
        snprintf(vn, 112, "adamw.v.%s", t[i].name);
        sf_st_writer_add(w, t[i].name, SF_F32, t[i].ndim, t[i].shape, t[i].w);
        sf_st_writer_add(w, mn, SF_F32, t[i].ndim, t[i].shape, a->m + off);
        sf_st_writer_add(w, vn, SF_F32, t[i].ndim, t[i].shape, a->v + off);
        off += t[i].n;
    }
    char v[10][64];
    snprintf(v[0], 64, "%" PRId64, p->step);
    snprintf(v[1], 64, "%" PRId64, p->seqs);
    snprintf(v[2], 64, "%016" PRIx64, p->data_hash);
    snprintf(v[3], 64, "%" PRId64, p->valid_seqs);
    snprintf(v[4], 64, "%016" PRIx64, p->valid_hash);
    snprintf(v[5], 64, "%a", p->loss_sum); /* hexadecimal: the exact double */
    snprintf(v[6], 64, "%" PRId64, p->loss_steps);
    snprintf(v[7], 64, "%" PRId64, p->log_bytes);
    snprintf(v[8], 64, "%" PRIu64, p->seed);
    snprintf(v[9], 64, "%" PRId64, a->t);
    const char *keys[10] = {"step", "seqs", "data_hash", "valid_seqs", "valid_hash", "loss_sum", "loss_steps",
                            "log_bytes", "seed", "adamw_t"};
    sf_st_writer_meta(w, "format", STATE_FORMAT);
    sf_st_writer_meta(w, "settings", settings);
    for (int i = 0; i < 10; i++) sf_st_writer_meta(w, keys[i], v[i]);
    int rc = sf_st_writer_save(w, path, NULL);
    sf_st_writer_free(w);
    free(names);
    return rc;
}

static int meta_i64(const sf_st_file *f, const char *path, const char *key, int base, uint64_t *out) {
    const char *s = sf_st_metadata(f, key);
    char *end;
    errno = 0;
    if (s) *out = strtoull(s, &end, base);
    if (!s || !*s || *end || errno) return sf_fail("%s: training state without a valid \"%s\"", path, key);
    return SF_OK;
}

int lm_state_load(const char *path, lm_model *m, lm_adamw *a, lm_train_pos *p, const char *settings) {
    sf_st_file *f = sf_st_open(path);
    if (!f) return SF_ERR;
    int rc = SF_ERR;
    const char *fmt = sf_st_metadata(f, "format"), *set = sf_st_metadata(f, "settings"), *ls;
    if (!fmt || strcmp(fmt, STATE_FORMAT)) {
        sf_fail("%s: not an lm_trainer training state (format %s, expected %s)", path, fmt ? fmt : "missing", STATE_FORMAT);
        goto out;
    }
    if (!set || strcmp(set, settings)) {
        sf_fail("%s was trained with other settings; resume with the same ones (or start a new run in another "
                "out_dir): state: %s; now: %s", path, set ? set : "none", settings);
        goto out;
    }
    uint64_t u[10];
    const char *keys[10] = {"step", "seqs", "data_hash", "valid_seqs", "valid_hash", "loss_steps", "log_bytes",
                            "seed", "adamw_t", NULL};
    for (int i = 0; keys[i]; i++)
        if (meta_i64(f, path, keys[i], strstr(keys[i], "hash") ? 16 : 10, &u[i]) != SF_OK) goto out;
    if (!(ls = sf_st_metadata(f, "loss_sum"))) {
        sf_fail("%s: training state without \"loss_sum\"", path);
        goto out;
    }
    p->step = (int64_t)u[0], p->seqs = (int64_t)u[1], p->data_hash = u[2], p->valid_seqs = (int64_t)u[3];
    p->valid_hash = u[4], p->loss_steps = (int64_t)u[5], p->log_bytes = (int64_t)u[6], p->seed = u[7];
    p->loss_sum = strtod(ls, NULL);
    a->t = (int64_t)u[8];
    lm_tensor *t;
    size_t nt = lm_model_tensors(m, &t), off = 0;
    if (sf_st_count(f) != 3 * nt) {
        sf_fail("%s holds %zu tensors, a state of this model %zu: another model?", path, sf_st_count(f), 3 * nt);
        goto out;
    }
    for (size_t i = 0; i < nt; i++) {
        char name[128];
        float *dst[3] = {t[i].w, a->m + off, a->v + off};
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof name, "%s%s", k == 0 ? "" : k == 1 ? "adamw.m." : "adamw.v.", t[i].name);
            const sf_st_tensor *s = sf_st_find(f, name);
            if (!s || s->t.dtype != SF_F32 || s->t.ndim != t[i].ndim || s->t.shape[0] != t[i].shape[0] ||
                (t[i].ndim == 2 && s->t.shape[1] != t[i].shape[1])) {
                sf_fail("%s: tensor %s is missing or not F32 of the model's shape: another model?", path, name);
                goto out;
            }
            sf_convert_to_f32(dst[k], s->t.data, SF_F32, t[i].n);
        }
        off += t[i].n;
    }
    rc = SF_OK;
out:
    sf_st_close(f);
    return rc;
}
