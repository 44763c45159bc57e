/* Every entry point of libmodernbert from C, on the test fixtures: built from the header and the
 * library only, run by scripts/c-abi-check.sh on the CPU and emulated devices and under valgrind.
 *
 *   abi_check FIXTURES_DIR [cpu|emulated]
 *
 * Exits 0 when every check holds; prints each failed check and exits 1 otherwise.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modernbert.h"

static int checks, failures;

#define CHECK(cond, ...)                                                    \
  do {                                                                      \
    checks++;                                                               \
    if (!(cond)) {                                                          \
      failures++;                                                           \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                         \
      fprintf(stderr, " (last error: %s)\n", mb_last_error());              \
    }                                                                       \
  } while (0)

#define OK(call) CHECK((call) == MB_OK, "%s", #call)

static mb_text text(const char *s) {
  mb_text t = {s, strlen(s)};
  return t;
}

static mb_engine *open_model(const char *root, const char *name, int32_t device, int32_t overlong) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", root, name);
  mb_engine_options o = {.struct_size = sizeof o};
  OK(mb_engine_options_default(&o));
  o.device = device;
  o.overlong = overlong;
  mb_engine *e = NULL;
  mb_status s = mb_engine_create(path, &o, &e);
  CHECK(s == MB_OK && e != NULL, "create %s: status %d", name, (int)s);
  return e;
}

static double norm(const float *v, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)v[i] * v[i];
  return sqrt(s);
}

/* --- threads: one engine, several threads, results equal the sequential ones */
#define THREADS 4
#define CALLS 25
struct job {
  mb_engine *engine;
  size_t dim;
  const float *reference; /* [2][dim] */
  int mismatches;
};
static const char *thread_texts[2] = {"first thread text", "second one"};

static void *worker(void *arg) {
  struct job *job = arg;
  float *out = malloc(job->dim * sizeof *out);
  for (int i = 0; i < CALLS; i++) {
    mb_text t = text(thread_texts[i % 2]);
    if (out == NULL || mb_embed(job->engine, &t, 1, NULL, out, job->dim, NULL) != MB_OK ||
        memcmp(out, job->reference + (size_t)(i % 2) * job->dim, job->dim * sizeof *out) != 0)
      job->mismatches++;
  }
  free(out);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s FIXTURES_DIR [cpu|emulated]\n", argv[0]);
    return 2;
  }
  const char *root = argv[1];
  int emulated = argc >= 3 && strcmp(argv[2], "emulated") == 0;
  int32_t device = emulated ? MB_DEVICE_EMULATED : MB_DEVICE_CPU;
  /* The emulated device needs head_dim 64 models. */
  const char *embed_model = emulated ? "colbert_hd64_pylate" : "st_mean_normalize_prompts";
  const char *cls_model = emulated ? "seqcls_hd64_mean_f32" : "seqcls_cls_allbias_v4_f32";
  const char *rerank_model = emulated ? "seqcls_hd64_mean_f32" : "seqcls_mean_crossenc_v5_bf16";
  const char *mlm_model = emulated ? "mlm_hd64_v5_bf16" : "mlm_l3_v5_f32";

  CHECK(mb_version() != NULL && strlen(mb_version()) > 0, "version");
  CHECK(mb_abi_version() >= MB_ABI_VERSION, "the library's ABI is at least the header's");

  /* --- embeddings */
  mb_engine *e = open_model(root, embed_model, device, MB_OVERLONG_TRUNCATE);
  if (e == NULL) return 1;
  mb_text texts[3] = {text("The cat sits on the mat."), text("A cat is on a mat."), text("Stocks fell.")};
  size_t dim = 0, needed = 0;
  OK(mb_engine_embed_dim(e, NULL, &dim));
  CHECK(dim > 0, "dim %zu", dim);
  CHECK(mb_embed(e, texts, 3, NULL, NULL, 0, &needed) == MB_ERR_BUFFER_TOO_SMALL, "size query");
  CHECK(needed == 3 * dim, "needed %zu", needed);
  float *emb = malloc(needed * sizeof *emb);
  float *emb2 = malloc(needed * sizeof *emb2);
  OK(mb_embed(e, texts, 3, NULL, emb, needed, NULL));
  OK(mb_embed(e, texts, 3, NULL, emb2, needed, NULL));
  CHECK(memcmp(emb, emb2, needed * sizeof *emb) == 0, "deterministic");
  CHECK(strcmp(mb_last_error(), "") == 0, "success clears the error");
  for (size_t i = 0; i < 3; i++) CHECK(isfinite(norm(emb + i * dim, dim)) && norm(emb + i * dim, dim) > 0, "row %zu", i);
  /* Options: Matryoshka dim 8, normalised. */
  mb_embed_options eo = {.struct_size = sizeof eo};
  eo.dim = 8;
  eo.normalize = MB_NORMALIZE_ON;
  size_t dim8 = 0;
  OK(mb_engine_embed_dim(e, &eo, &dim8));
  CHECK(dim8 == 8, "dim8 %zu", dim8);
  OK(mb_embed(e, texts, 3, &eo, emb2, 24, NULL));
  for (size_t i = 0; i < 3; i++) CHECK(fabs(norm(emb2 + i * 8, 8) - 1.0) < 1e-4, "normalised row %zu", i);

  /* Errors: a message, nothing written. */
  float canary[4] = {42, 42, 42, 42};
  mb_text bad_utf8 = {"\xff\xfe", 2};
  CHECK(mb_embed(e, NULL, 1, NULL, canary, 4, NULL) == MB_ERR_NULL_POINTER, "NULL texts");
  CHECK(strstr(mb_last_error(), "NULL") != NULL, "message names NULL");
  CHECK(mb_embed(e, texts, 0, NULL, canary, 4, NULL) == MB_ERR_INVALID_ARGUMENT, "0 texts");
  CHECK(mb_embed(e, &bad_utf8, 1, NULL, canary, 4, NULL) == MB_ERR_INVALID_UTF8, "invalid UTF-8");
  CHECK(mb_embed(e, texts, 1, NULL, canary, 4, &needed) == MB_ERR_BUFFER_TOO_SMALL && needed == dim, "small buffer");
  CHECK(canary[0] == 42 && canary[3] == 42, "untouched");
  CHECK(mb_classify(e, texts, 1, canary, 4, NULL, NULL, NULL) == MB_ERR_UNSUPPORTED, "no classifier");
  CHECK(strlen(mb_last_error()) > 0, "message");

  /* Threads share the engine. */
  struct job jobs[THREADS];
  pthread_t tids[THREADS];
  float *reference = malloc(2 * dim * sizeof *reference);
  for (int k = 0; k < 2; k++) {
    mb_text t = text(thread_texts[k]);
    OK(mb_embed(e, &t, 1, NULL, reference + (size_t)k * dim, dim, NULL));
  }
  for (int t = 0; t < THREADS; t++) {
    jobs[t] = (struct job){e, dim, reference, 0};
    CHECK(pthread_create(&tids[t], NULL, worker, &jobs[t]) == 0, "pthread_create");
  }
  for (int t = 0; t < THREADS; t++) {
    pthread_join(tids[t], NULL);
    CHECK(jobs[t].mismatches == 0, "thread %d: %d mismatches", t, jobs[t].mismatches);
  }
  free(reference);
  free(emb);
  free(emb2);

  /* Over-long text refused. */
  mb_engine *refuse = open_model(root, embed_model, device, MB_OVERLONG_REFUSE);
  size_t long_len = 5 * 9000;
  char *long_text = malloc(long_len + 1);
  for (size_t i = 0; i < long_len; i += 5) memcpy(long_text + i, "word ", 5);
  long_text[long_len] = 0;
  mb_text lt = text(long_text);
  float *one = malloc(dim * sizeof *one);
  CHECK(mb_embed(refuse, &lt, 1, NULL, one, dim, NULL) == MB_ERR_TEXT_TOO_LONG, "over-long refused");
  free(one);
  free(long_text);
  mb_engine_destroy(refuse);

  /* --- ColBERT (the colbert model works on both devices) */
  mb_engine *col = open_model(root, "colbert_hd64_pylate", device, MB_OVERLONG_TRUNCATE);
  size_t cdim = 0, counts[2] = {0, 0}, counts2[2] = {0, 0}, total = 0;
  mb_text ctexts[2] = {text("what is the capital of france?"), text("Paris!")};
  OK(mb_engine_colbert_dim(col, &cdim));
  for (int32_t is_query = 0; is_query <= 1; is_query++) {
    OK(mb_colbert_sizes(col, ctexts, 2, is_query, counts, &total));
    CHECK(total == counts[0] + counts[1] && total > 0, "total %zu", total);
    float *vecs = malloc(total * cdim * sizeof *vecs);
    OK(mb_colbert(col, ctexts, 2, is_query, vecs, total * cdim, counts2, &needed));
    CHECK(needed == total * cdim && counts2[0] == counts[0] && counts2[1] == counts[1], "colbert sizes");
    for (size_t v = 0; v < total; v++) CHECK(fabs(norm(vecs + v * cdim, cdim) - 1.0) < 1e-3, "vector %zu", v);
    free(vecs);
  }
  mb_engine_destroy(col);
  mb_engine_destroy(e);

  /* --- classification */
  mb_engine *cls = open_model(root, cls_model, device, MB_OVERLONG_TRUNCATE);
  size_t labels = 0;
  OK(mb_engine_num_labels(cls, &labels));
  CHECK(labels > 0, "labels");
  float *logits = malloc(3 * labels * sizeof *logits);
  uint32_t ids[3];
  float scores[3];
  OK(mb_classify(cls, texts, 3, logits, 3 * labels, ids, scores, &needed));
  for (int i = 0; i < 3; i++) {
    const char *name = NULL;
    CHECK(ids[i] < labels && scores[i] > 0 && scores[i] <= 1, "label %u score %f", ids[i], scores[i]);
    OK(mb_engine_label(cls, ids[i], &name));
    CHECK(name != NULL && strlen(name) > 0, "label name");
  }
  free(logits);
  mb_engine_destroy(cls);

  /* --- reranking */
  mb_engine *rr = open_model(root, rerank_model, device, MB_OVERLONG_TRUNCATE);
  const char *query = "capital of France";
  float rs[3] = {-1, -1, -1};
  OK(mb_rerank(rr, query, strlen(query), texts, 3, rs, 3, &needed));
  for (int i = 0; i < 3; i++) CHECK(rs[i] >= 0 && rs[i] <= 1, "score %f", rs[i]);
  CHECK(mb_rerank(rr, query, strlen(query), texts, 3, rs, 2, &needed) == MB_ERR_BUFFER_TOO_SMALL && needed == 3, "small");
  mb_engine_destroy(rr);

  /* --- fill-mask */
  mb_engine *mlm = open_model(root, mlm_model, device, MB_OVERLONG_TRUNCATE);
  mb_text mtexts[2] = {text("The capital of France is [MASK]."), text("[MASK] and [MASK].")};
  size_t masks[2] = {0, 0}, total_masks = 0, k = 3;
  OK(mb_fill_mask_sizes(mlm, mtexts, 2, masks, &total_masks));
  CHECK(masks[0] == 1 && masks[1] == 2 && total_masks == 3, "masks %zu %zu", masks[0], masks[1]);
  uint32_t *tok = malloc(total_masks * k * sizeof *tok);
  float *prob = malloc(total_masks * k * sizeof *prob);
  OK(mb_fill_mask(mlm, mtexts, 2, k, tok, prob, total_masks * k, masks, &needed));
  CHECK(needed == total_masks * k, "needed");
  for (size_t m = 0; m < total_masks; m++) {
    for (size_t j = 0; j + 1 < k; j++) CHECK(prob[m * k + j] >= prob[m * k + j + 1], "sorted");
    size_t len = 0;
    CHECK(mb_token_text(mlm, tok[m * k], NULL, 0, &len) == MB_ERR_BUFFER_TOO_SMALL, "token size query");
    char *buf = malloc(len + 1);
    OK(mb_token_text(mlm, tok[m * k], buf, len + 1, &len));
    CHECK(strlen(buf) == len, "token text length");
    free(buf);
  }
  free(tok);
  free(prob);
  mb_engine_destroy(mlm);

  /* --- creation errors */
  mb_engine *none = (mb_engine *)1;
  CHECK(mb_engine_create("/nonexistent/model", NULL, &none) == MB_ERR_MODEL && none == NULL, "missing model");
  mb_engine_options bad = {0};
  CHECK(mb_engine_create(root, &bad, &none) == MB_ERR_INVALID_ARGUMENT, "struct_size 0");
  /* Sizes beyond any memory are refused before anything is allocated: no abort of this process
     (scripts/c-abi-check.sh runs this program under `ulimit -v`). */
  char st_dir[4096];
  snprintf(st_dir, sizeof st_dir, "%s/st_mean_normalize_prompts", root);
  mb_engine_options huge = {.struct_size = sizeof huge};
  mb_engine_options_default(&huge);
  huge.device = emulated ? MB_DEVICE_EMULATED : MB_DEVICE_CPU;
  huge.max_batch_tokens = (size_t)1 << 40;
  CHECK(mb_engine_create(st_dir, &huge, &none) == MB_ERR_INVALID_ARGUMENT && none == NULL, "max_batch_tokens 2^40");
  huge.max_batch_tokens = SIZE_MAX;
  CHECK(mb_engine_create(st_dir, &huge, &none) == MB_ERR_INVALID_ARGUMENT && none == NULL, "max_batch_tokens SIZE_MAX");
  mb_engine_destroy(NULL);

  if (failures) {
    fprintf(stderr, "abi_check: %d of %d checks failed\n", failures, checks);
    return 1;
  }
  printf("abi_check (%s): all %d checks hold\n", emulated ? "emulated" : "cpu", checks);
  return 0;
}
