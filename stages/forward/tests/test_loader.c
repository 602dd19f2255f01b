/* Loader checks. Broken checkpoints must give clear errors naming what is wrong, never a crash:
 * truncated and corrupt safetensors, a missing tensor, a wrong shape or dtype, an unsupported
 * architecture or rope scaling, bad shard indexes, and bad token ids. Each case is a copy of the
 * llama_gqa_bf16 fixture with one thing broken. Also: GPT-2 tensors named without the
 * "transformer." prefix (OpenAI's original upload) load and compute the same logits. And the
 * safetensors reader itself (core/lib/safetensors.c, every loader's): data_offsets must tile the
 * data as the reference implementation requires (no overlap, gap or trailing bytes; any order in
 * the header, zero-size tensors anywhere), and a dtype/shape/offsets mismatch names all three.
 * Usage: forward_test_loader LLAMA_FIXTURE_DIR GPT2_FIXTURE_DIR */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "sf_safetensors.h"

static int failures;
static char tmp[256];
static const char *fixture;

static void expect_error(const char *what, const char *needle) {
    fw_model *m = fw_model_load(tmp, -1, 1);
    const char *err = sf_last_error();
    int ok = !m && strstr(err, needle);
    printf("%-26s %s: %s\n", what, ok ? "ok" : "FAIL", m ? "(loaded)" : err);
    if (!ok) failures++;
    fw_model_free(m);
}

/* config.json of the fixture with key set to value (value NULL: key removed). */
static void write_config(const char *key, json_t *value) {
    char src[4096], dst[4096];
    snprintf(src, sizeof src, "%s/config.json", fixture);
    snprintf(dst, sizeof dst, "%s/config.json", tmp);
    json_t *j = json_load_file(src, 0, NULL);
    if (!j) exit(1);
    if (key && value) json_object_set_new(j, key, value);
    else if (key) json_object_del(j, key);
    json_dump_file(j, dst, 0);
    json_decref(j);
}

/* A copy of the fixture's weights, without tensor `skip`, and with tensor `reshape` given a
 * transposed shape or `retype` labelled as dtype `as` (each NULL for none). */
static void write_weights_as(const char *file, const char *skip, const char *reshape, const char *retype,
                             sf_dtype as) {
    char src[4096], dst[4096];
    snprintf(src, sizeof src, "%s/model.safetensors", fixture);
    snprintf(dst, sizeof dst, "%s/%s", tmp, file);
    sf_st_file *f = sf_st_open(src);
    sf_st_writer *w = sf_st_writer_new();
    for (size_t i = 0; i < sf_st_count(f); i++) {
        const sf_st_tensor *t = sf_st_at(f, i);
        int64_t shape[SF_MAX_DIMS];
        memcpy(shape, t->t.shape, sizeof shape);
        sf_dtype dt = t->t.dtype;
        if (skip && !strcmp(t->name, skip)) continue;
        if (reshape && !strcmp(t->name, reshape)) shape[0] = t->t.shape[1], shape[1] = t->t.shape[0];
        if (retype && !strcmp(t->name, retype)) dt = as;
        sf_st_writer_add(w, t->name, dt, t->t.ndim, shape, t->t.data);
    }
    if (sf_st_writer_save(w, dst, NULL) != SF_OK) {
        fprintf(stderr, "%s\n", sf_last_error());
        exit(1);
    }
    sf_st_writer_free(w);
    sf_st_close(f);
}

static void write_weights(const char *file, const char *skip, const char *reshape, const char *retype) {
    write_weights_as(file, skip, reshape, retype, SF_I16); /* I16: the same size as bf16 */
}

/* sf_st_open on a file of `header` (JSON) and `data_len` zero bytes of data: NULL error or "ok". */
static void expect_st(const char *what, const char *header, size_t data_len, const char *needle) {
    char path[4096];
    snprintf(path, sizeof path, "%s/raw.safetensors", tmp);
    FILE *f = fopen(path, "wb");
    uint64_t n = strlen(header);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(n >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, n, f);
    for (size_t i = 0; i < data_len; i++) fputc(0, f);
    fclose(f);
    sf_st_file *st = sf_st_open(path);
    int ok = needle ? !st && strstr(sf_last_error(), needle) : st != NULL;
    printf("%-26s %s: %s\n", what, ok ? "ok" : "FAIL", st ? "(opened)" : sf_last_error());
    failures += !ok;
    sf_st_close(st);
    unlink(path);
}

static void safetensors_offsets(void) {
    expect_st("tiled, header out of order", "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 16, NULL);
    expect_st("zero-size tensors", "{\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[8,8]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"z\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 8, NULL);
    expect_st("overlapping tensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "an overlap");
    expect_st("same bytes twice", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "an overlap");
    expect_st("gap between tensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[10,18]}}", 18, "a gap");
    expect_st("gap at the start", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}}", 10, "a gap");
    expect_st("bytes after the last", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12,
              "no tensor owns");
    expect_st("I8 of a float's size", "{\"a\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
              "'a' is I8 of shape [2], 2 bytes, but its data_offsets [0, 8] hold 8");
    expect_st("offsets past the data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 4,
              "past the end of the data");
    expect_st("unknown dtype", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
              "unsupported dtype F8_E4M3");
    expect_st("shape size overflows", "{\"a\":{\"dtype\":\"F64\",\"shape\":[1099511627776,1099511627776],"
              "\"data_offsets\":[0,8]}}", 8, "larger than the file's data");
}

/* The GPT-2 fixture rewritten without the "transformer." prefix must give the same logits. */
static void gpt2_without_prefix(const char *gpt2) {
    char src[4096], dst[4096], cmd[8192];
    snprintf(cmd, sizeof cmd, "cp '%s/config.json' '%s/'", gpt2, tmp);
    if (system(cmd) != 0) exit(1);
    snprintf(src, sizeof src, "%s/model.safetensors", gpt2);
    snprintf(dst, sizeof dst, "%s/model.safetensors", tmp);
    sf_st_file *f = sf_st_open(src);
    sf_st_writer *w = sf_st_writer_new();
    const char *pre = "transformer.";
    for (size_t i = 0; i < sf_st_count(f); i++) {
        const sf_st_tensor *t = sf_st_at(f, i);
        const char *name = strncmp(t->name, pre, strlen(pre)) ? t->name : t->name + strlen(pre);
        sf_st_writer_add(w, name, t->t.dtype, t->t.ndim, t->t.shape, t->t.data);
    }
    if (sf_st_writer_save(w, dst, NULL) != SF_OK) exit(1);
    sf_st_writer_free(w);
    sf_st_close(f);

    fw_model *a = fw_model_load(gpt2, -1, 1), *b = fw_model_load(tmp, -1, 1);
    int ok = a && b;
    if (ok) {
        int32_t toks[6] = {1, 5, 9, 2, 77, 3};
        int V = a->cfg.vocab;
        float *la = calloc((size_t)6 * V, sizeof *la), *lb = calloc((size_t)6 * V, sizeof *lb);
        fw_state *s = fw_state_new(1);
        fw_request ra = {toks, 1, 6, 0, NULL, NULL, la, NULL, NULL, NULL}, rb = {toks, 1, 6, 0, NULL, NULL, lb, NULL, NULL, NULL};
        ok = fw_forward(a, s, &ra) == SF_OK && fw_forward(b, s, &rb) == SF_OK && !memcmp(la, lb, (size_t)6 * V * sizeof *la);
        fw_state_free(s);
        free(la);
        free(lb);
    }
    printf("%-26s %s: %s\n", "gpt2 without prefix", ok ? "ok" : "FAIL", ok ? "same logits" : sf_last_error());
    failures += !ok;
    fw_model_free(a);
    fw_model_free(b);
    remove(dst);
}

static void write_bytes(const char *file, const void *p, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", tmp, file);
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

static void remove_file(const char *file) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", tmp, file);
    unlink(path);
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    fixture = argv[1];
    snprintf(tmp, sizeof tmp, "/tmp/forward_errors_XXXXXX");
    if (!mkdtemp(tmp)) return 1;

    /* the intact copy loads */
    write_config(NULL, NULL);
    write_weights("model.safetensors", NULL, NULL, NULL);
    fw_model *ok = fw_model_load(tmp, -1, 1);
    if (!ok) {
        printf("intact copy: FAIL: %s\n", sf_last_error());
        return 1;
    }

    /* bad token ids are refused by the forward */
    int32_t toks[3] = {1, ok->cfg.vocab, 2};
    fw_state *s = fw_state_new(2);
    float loss[3];
    fw_request r = {toks, 1, 3, 0, NULL, NULL, NULL, loss, NULL, NULL};
    int rc = fw_forward(ok, s, &r);
    printf("%-26s %s: %s\n", "token id = vocab", rc != SF_OK && strstr(sf_last_error(), "outside the vocabulary") ? "ok" : "FAIL",
           sf_last_error());
    failures += !(rc != SF_OK && strstr(sf_last_error(), "outside the vocabulary"));
    fw_state_free(s);
    fw_model_free(ok);

    safetensors_offsets();

    /* corrupt and truncated files */
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len);
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) return 1;
    fclose(f);
    write_bytes("model.safetensors", buf, (size_t)len / 2);
    expect_error("truncated data", "model.safetensors");
    write_bytes("model.safetensors", buf, 100);
    expect_error("truncated header", "model.safetensors");
    write_bytes("model.safetensors", buf, 5);
    expect_error("shorter than 8 bytes", "model.safetensors");
    buf[7] = 0x7f; /* header length ~2^63 */
    write_bytes("model.safetensors", buf, (size_t)len);
    expect_error("huge header length", "header length");
    buf[7] = 0;
    buf[8] = '#'; /* the JSON header's opening brace */
    write_bytes("model.safetensors", buf, (size_t)len);
    expect_error("corrupt header JSON", "JSON");
    free(buf);

    /* tensors */
    write_weights("model.safetensors", "model.layers.1.mlp.up_proj.weight", NULL, NULL);
    expect_error("missing tensor", "model.layers.1.mlp.up_proj.weight");
    write_weights("model.safetensors", NULL, "model.layers.2.self_attn.k_proj.weight", NULL);
    expect_error("wrong shape", "\"model.layers.2.self_attn.k_proj.weight\" has shape [32, 16], expected [16, 32]");
    write_weights("model.safetensors", NULL, NULL, "model.norm.weight");
    expect_error("integer dtype", "\"model.norm.weight\" has unsupported dtype I16");
    write_weights_as("model.safetensors", NULL, NULL, "model.norm.weight", SF_I8);
    expect_error("I8 tensor", "\"model.norm.weight\" has unsupported dtype I8");
    write_weights("model.safetensors", NULL, NULL, NULL);
    write_config("tie_word_embeddings", json_false());
    expect_error("untied, no lm_head", "lm_head.weight");

    /* config.json */
    write_config("architectures", json_pack("[s]", "BertForMaskedLM"));
    expect_error("unsupported architecture", "unsupported architecture \"BertForMaskedLM\"");
    write_config("hidden_size", NULL);
    expect_error("missing hidden_size", "missing \"hidden_size\"");
    write_config("num_key_value_heads", json_integer(3));
    expect_error("heads not multiple of kv", "not a multiple of 3 key/value heads");
    write_config("rope_scaling", json_pack("{s:s, s:f}", "rope_type", "yarn", "factor", 4.0));
    expect_error("unsupported rope scaling", "unsupported rope_scaling type \"yarn\"");
    write_config("hidden_act", json_string("mish"));
    expect_error("unsupported activation", "\"mish\"");
    write_bytes("config.json", "{\"architectures\": [", 19);
    expect_error("corrupt config.json", "config.json");

    /* shard indexes */
    write_config(NULL, NULL);
    remove_file("model.safetensors");
    expect_error("no weights at all", "no model.safetensors");
    write_weights("model-00001-of-00001.safetensors", NULL, NULL, NULL);
    const char *evil = "{\"weight_map\": {\"model.norm.weight\": \"../model-00001-of-00001.safetensors\"}}";
    write_bytes("model.safetensors.index.json", evil, strlen(evil));
    expect_error("index escapes the dir", "bad shard file name");
    const char *absent = "{\"weight_map\": {\"model.norm.weight\": \"model-00002-of-00002.safetensors\"}}";
    write_bytes("model.safetensors.index.json", absent, strlen(absent));
    expect_error("index names absent shard", "model-00002-of-00002.safetensors");
    const char *partial = "{\"weight_map\": {\"model.norm.weight\": \"model-00001-of-00001.safetensors\"}}";
    write_bytes("model.safetensors.index.json", partial, strlen(partial));
    expect_error("index lacks a tensor", "lists no tensor \"model.embed_tokens.weight\"");

    remove_file("model.safetensors.index.json");
    remove_file("model-00001-of-00001.safetensors");
    gpt2_without_prefix(argv[2]);

    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) return 1;
    if (failures) printf("%d checks failed\n", failures);
    return failures ? 1 : 0;
}
