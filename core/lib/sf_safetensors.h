/* sf_safetensors.h — reading and writing safetensors files (Hugging Face's format), shared by the
 * built-in stages. Reading memory-maps the file and validates every header length, dtype, shape
 * and offset against it; writing is atomic and durable (temp file, fsync, rename, fsync dir). */
#ifndef SF_SAFETENSORS_H
#define SF_SAFETENSORS_H

#include "saeflow.h"

typedef struct sf_st_file sf_st_file;

typedef struct sf_st_tensor {
    const char *name;
    sf_tensor t; /* t.data points into the mapping; aligned only as the file aligns it */
} sf_st_tensor;

/* NULL with sf_last_error() naming the file and the problem. */
SF_EXPORT sf_st_file *sf_st_open(const char *path);
SF_EXPORT void sf_st_close(sf_st_file *f);
SF_EXPORT size_t sf_st_count(const sf_st_file *f);
SF_EXPORT const sf_st_tensor *sf_st_at(const sf_st_file *f, size_t i);
SF_EXPORT const sf_st_tensor *sf_st_find(const sf_st_file *f, const char *name);
/* A "__metadata__" string value, or NULL. */
SF_EXPORT const char *sf_st_metadata(const sf_st_file *f, const char *key);

typedef struct sf_st_writer sf_st_writer;

SF_EXPORT sf_st_writer *sf_st_writer_new(void);
/* data is referenced, not copied: keep it alive until sf_st_writer_save returns. */
SF_EXPORT void sf_st_writer_add(sf_st_writer *w, const char *name, sf_dtype dtype, int ndim,
                                const int64_t *shape, const void *data);
SF_EXPORT void sf_st_writer_meta(sf_st_writer *w, const char *key, const char *value);
/* Writes path atomically (path.tmp, fsync, rename, fsync of the directory). If crc32 is not NULL
 * it receives the CRC-32 (zlib's, sf_crc32) of the whole file written. */
SF_EXPORT int sf_st_writer_save(sf_st_writer *w, const char *path, uint32_t *crc32);
SF_EXPORT void sf_st_writer_free(sf_st_writer *w);

/* Writes len bytes of buf to path as sf_st_writer_save writes a file: through path.tmp, fsync,
 * rename, fsync of the directory; on failure path is unchanged. SF_OK or SF_ERR (sf_fail). */
SF_EXPORT int sf_write_file_atomic(const char *path, const void *buf, size_t len);
/* fsyncs the directory holding path (after a rename or unlink there). SF_OK or SF_ERR. */
SF_EXPORT int sf_sync_parent(const char *path);
/* Finished outputs replaced whole: tmp_dir (complete) takes dir's place in one atomic exchange
 * (renameat2 RENAME_EXCHANGE; a plain rename when dir does not exist), then the old output is
 * removed. Until then dir is untouched, so a failed run leaves it as it was. SF_OK or SF_ERR. */
SF_EXPORT int sf_replace_dir(const char *tmp_dir, const char *dir);
/* rm -rf path (nothing there is fine). SF_OK or SF_ERR. */
SF_EXPORT int sf_remove_tree(const char *path);

/* zlib's CRC-32 (crc32_z) of n more bytes, starting from crc (0 for a new one); computed with
 * ISA-L's folding (PCLMULQDQ) when built with libisal-dev. */
SF_EXPORT uint32_t sf_crc32(uint32_t crc, const void *p, size_t n);

#endif
