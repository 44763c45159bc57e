/* A small C host for libmodernbert: embeds a few texts and prints their cosine similarities.
 *
 *   similarity MODEL_DIR [auto|cpu|emulated|cuda] [TEXT...]
 *
 * Build (from the repository root, after `cargo build --release`):
 *   cc -std=c11 -Iinclude examples/c/similarity.c -Ltarget/release -lmodernbert \
 *      -Wl,-rpath,$PWD/target/release -lm -o similarity
 * or with pkg-config: cc examples/c/similarity.c $(pkg-config --cflags --libs modernbert) -lm
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modernbert.h"

static int device_from(const char *name, int32_t *device) {
  static const struct { const char *name; mb_device value; } devices[] = {
      {"auto", MB_DEVICE_AUTO}, {"cpu", MB_DEVICE_CPU}, {"emulated", MB_DEVICE_EMULATED}, {"cuda", MB_DEVICE_CUDA}};
  for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++) {
    if (strcmp(name, devices[i].name) == 0) {
      *device = (int32_t)devices[i].value;
      return 1;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  static const char *default_texts[] = {
      "The cat sits on the mat.",
      "A cat is sitting on a mat.",
      "Stock markets fell sharply today.",
      "The cat sits on the mat.",
  };
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL_DIR [auto|cpu|emulated|cuda] [TEXT...]\n", argv[0]);
    return 2;
  }
  mb_engine_options options = {.struct_size = sizeof options};
  if (mb_engine_options_default(&options) != MB_OK) {
    fprintf(stderr, "options: %s\n", mb_last_error());
    return 1;
  }
  if (argc >= 3 && !device_from(argv[2], &options.device)) {
    fprintf(stderr, "unknown device %s\n", argv[2]);
    return 2;
  }
  const char *const *texts = default_texts;
  size_t n = sizeof default_texts / sizeof default_texts[0];
  if (argc >= 4) {
    texts = (const char *const *)&argv[3];
    n = (size_t)(argc - 3);
  }

  printf("libmodernbert %s\n", mb_version());
  mb_engine *engine = NULL;
  mb_status status = mb_engine_create(argv[1], &options, &engine);
  if (status != MB_OK) {
    fprintf(stderr, "mb_engine_create: error %d: %s\n", (int)status, mb_last_error());
    return 1;
  }

  int rc = 1;
  float *embeddings = NULL;
  mb_text *inputs = calloc(n, sizeof *inputs);
  size_t dim = 0, needed = 0;
  if (inputs == NULL) goto done;
  for (size_t i = 0; i < n; i++) {
    inputs[i].ptr = texts[i];
    inputs[i].len = strlen(texts[i]);
  }
  if ((status = mb_engine_embed_dim(engine, NULL, &dim)) != MB_OK) {
    fprintf(stderr, "mb_engine_embed_dim: error %d: %s\n", (int)status, mb_last_error());
    goto done;
  }
  embeddings = malloc(n * dim * sizeof *embeddings);
  if (embeddings == NULL) goto done;
  status = mb_embed(engine, inputs, n, NULL, embeddings, n * dim, &needed);
  if (status != MB_OK) {
    fprintf(stderr, "mb_embed: error %d: %s\n", (int)status, mb_last_error());
    goto done;
  }

  printf("%zu texts, %zu dimensions\n", n, dim);
  for (size_t i = 0; i < n; i++) printf("[%zu] %s\n", i, texts[i]);
  printf("cosine similarities:\n");
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < n; j++) {
      const float *a = embeddings + i * dim, *b = embeddings + j * dim;
      double dot = 0, na = 0, nb = 0;
      for (size_t k = 0; k < dim; k++) {
        dot += (double)a[k] * b[k];
        na += (double)a[k] * a[k];
        nb += (double)b[k] * b[k];
      }
      printf("%s%7.4f", j ? " " : "", dot / (sqrt(na) * sqrt(nb)));
    }
    printf("\n");
  }
  rc = 0;

done:
  free(embeddings);
  free(inputs);
  mb_engine_destroy(engine);
  return rc;
}
