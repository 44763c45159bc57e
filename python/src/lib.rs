//! `modernbert._native`: the engine for Python. The package's `modernbert/__init__.py` gives it
//! sentence-transformers' API; this module only converts: Python values in, the engine's call with
//! the GIL released, NumPy arrays out (each takes over the Rust vector of its rows: the engine's
//! per-text rows are joined into it once, then no copy).
//!
//! Errors: the engine's one-line message, as `ValueError` (bad input, a bad model directory, an
//! unsupported task) or `RuntimeError` (the device failed, or a bug: a panic is caught here and
//! never unwinds into the interpreter).

use std::panic::{catch_unwind, AssertUnwindSafe};

use modernbert::engine::{DeviceChoice, EmbedOptions, Engine, EngineOptions};
use modernbert::error::Error;
use modernbert::kernels::Dtype;
use modernbert::quantize::{quantize, Precision, Quantized};
use modernbert::tokenize::OverlongPolicy;
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

fn to_py(e: Error) -> PyErr {
    match e {
        Error::Device(_) => PyRuntimeError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// Run `f` with the GIL released (other Python threads run meanwhile), a panic turned into a
/// `RuntimeError`.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> modernbert::error::Result<T> + Send) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(f)))
        .map_err(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            PyRuntimeError::new_err(format!("internal error in modernbert (a bug): {what}"))
        })?
        .map_err(to_py)
}

/// `rows` (`n` rows, row-major) as an `[n, width]` array that owns the vector's buffer.
fn matrix<T: numpy::Element>(py: Python<'_>, rows: Vec<T>, width: usize) -> PyResult<Bound<'_, PyArray2<T>>> {
    let n = if width == 0 { 0 } else { rows.len() / width };
    let a = Array2::from_shape_vec((n, width), rows).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py))
}

fn refs(texts: &[String]) -> Vec<&str> {
    texts.iter().map(String::as_str).collect()
}

/// A loaded model (see `modernbert.Model`). Safe to call from many threads at once.
#[pyclass(frozen, module = "modernbert._native", name = "Engine")]
struct PyEngine {
    engine: Engine,
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (model, device = "auto", dtype = "bf16", max_batch_tokens = 16384, truncate = true, cuda_graphs = true))]
    fn new(
        py: Python<'_>,
        model: &str,
        device: &str,
        dtype: &str,
        max_batch_tokens: usize,
        truncate: bool,
        cuda_graphs: bool,
    ) -> PyResult<Self> {
        let device = DeviceChoice::parse(device).map_err(|e| PyValueError::new_err(format!("device: {e}")))?;
        let dtype = match dtype {
            "bf16" | "bfloat16" => Dtype::Bf16,
            "fp16" | "f16" | "float16" => Dtype::F16,
            other => {
                return Err(PyValueError::new_err(format!(
                    "dtype: {other:?} is not supported (bf16 or fp16; the CPU computes in f32 whatever this says)"
                )))
            }
        };
        let options = EngineOptions {
            coalesce: true,
            device,
            dtype,
            max_batch_tokens,
            graphs: cuda_graphs,
            gpu_path: Default::default(),
            overlong: if truncate {
                OverlongPolicy::Truncate
            } else {
                OverlongPolicy::Refuse
            },
        };
        let model = model.to_string();
        let engine = detached(py, move || {
            let dir = modernbert::hub::resolve_model(&model)?;
            Engine::new(&dir, &options)
        })?;
        Ok(PyEngine { engine })
    }

    /// Sentence embeddings `[n, dim]` float32 with `SentenceTransformer.encode`'s semantics.
    #[pyo3(signature = (texts, prompt_name = None, prompt = None, normalize_embeddings = false, truncate_dim = None))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        prompt_name: Option<String>,
        prompt: Option<String>,
        normalize_embeddings: bool,
        truncate_dim: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let options = EmbedOptions::sentence_transformers(prompt_name, prompt, normalize_embeddings, truncate_dim);
        let (rows, dim) = detached(py, || {
            let dim = self.engine.embed_dim(&options)?;
            let rows = self.engine.embed(&refs(&texts), &options)?;
            Ok((rows.concat(), dim))
        })?;
        matrix(py, rows, dim)
    }

    /// `quantize_embeddings(embeddings, precision)` of sentence-transformers, bit for bit.
    fn quantize<'py>(
        &self,
        py: Python<'py>,
        embeddings: PyReadonlyArray2<'py, f32>,
        precision: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let precision = Precision::parse(precision).map_err(to_py)?;
        let (n, dim) = (embeddings.shape()[0], embeddings.shape()[1]);
        let rows = embeddings.as_array().iter().copied().collect::<Vec<f32>>();
        let width = precision.width(n, dim);
        Ok(match detached(py, || quantize(rows, dim, precision, None))? {
            Quantized::F32(v) => matrix(py, v, width)?.into_any(),
            Quantized::I8(v) => matrix(py, v, width)?.into_any(),
            Quantized::U8(v) => matrix(py, v, width)?.into_any(),
        })
    }

    /// `CrossEncoder.predict`: `[pairs, labels]` activated logits.
    fn predict<'py>(&self, py: Python<'py>, pairs: Vec<(String, String)>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (rows, labels) = detached(py, || {
            let labels = self.engine.num_labels()?;
            let p: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let scores = modernbert::tokenize::collect_per_text(self.engine.predict_pairs_each(&p)?)?;
            Ok((scores.concat(), labels))
        })?;
        matrix(py, rows, labels)
    }

    /// Sequence classification: a dict (`label`, `label_id`, `score`, `logits`) per text.
    fn classify<'py>(&self, py: Python<'py>, texts: Vec<String>) -> PyResult<Bound<'py, PyList>> {
        let results = detached(py, || self.engine.classify(&refs(&texts)))?;
        let out = PyList::empty(py);
        for c in results {
            let d = PyDict::new(py);
            d.set_item("label", c.label)?;
            d.set_item("label_id", c.label_id)?;
            d.set_item("score", c.score)?;
            d.set_item("logits", c.logits.into_pyarray(py))?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// Fill-mask: per text, per `[MASK]`, the `top_k` predictions as dicts (`id`, `token`, `score`).
    fn fill_mask<'py>(&self, py: Python<'py>, texts: Vec<String>, top_k: usize) -> PyResult<Bound<'py, PyList>> {
        let results = detached(py, || self.engine.fill_mask(&refs(&texts), top_k))?;
        let out = PyList::empty(py);
        for masks in results {
            let per_mask = PyList::empty(py);
            for predictions in masks {
                let list = PyList::empty(py);
                for p in predictions {
                    let d = PyDict::new(py);
                    d.set_item("id", p.id)?;
                    d.set_item("token", p.token)?;
                    d.set_item("score", p.score)?;
                    list.append(d)?;
                }
                per_mask.append(list)?;
            }
            out.append(per_mask)?;
        }
        Ok(out)
    }

    /// Token classification: a `[tokens, labels]` array per text (special tokens included).
    fn token_logits<'py>(&self, py: Python<'py>, texts: Vec<String>) -> PyResult<Bound<'py, PyList>> {
        let (labels, results) = detached(py, || {
            Ok((self.engine.num_labels()?, self.engine.token_logits(&refs(&texts))?))
        })?;
        let out = PyList::empty(py);
        for per_token in results {
            out.append(matrix(py, per_token.concat(), labels)?)?;
        }
        Ok(out)
    }

    /// ColBERT (PyLate): a `[vectors, dim]` array per text.
    #[pyo3(signature = (texts, is_query = false))]
    fn colbert<'py>(&self, py: Python<'py>, texts: Vec<String>, is_query: bool) -> PyResult<Bound<'py, PyList>> {
        let (dim, results) = detached(py, || {
            Ok((
                self.engine.colbert_dim()?,
                self.engine.colbert(&refs(&texts), is_query)?,
            ))
        })?;
        let out = PyList::empty(py);
        for vectors in results {
            out.append(matrix(py, vectors.concat(), dim)?)?;
        }
        Ok(out)
    }

    /// Benchmark baseline: the seconds of each of `calls` `Engine::embed` calls on `texts`, timed in
    /// Rust with no Python in the loop (scripts/bench_python.py sets `encode` beside it).
    fn _time_embed(&self, py: Python<'_>, texts: Vec<String>, calls: usize) -> PyResult<Vec<f64>> {
        let options = EmbedOptions::sentence_transformers(None, None, false, None);
        detached(py, || {
            let texts = refs(&texts);
            let mut seconds = Vec::with_capacity(calls);
            for _ in 0..calls {
                let t = std::time::Instant::now();
                std::hint::black_box(self.engine.embed(&texts, &options)?.concat());
                seconds.push(t.elapsed().as_secs_f64());
            }
            Ok(seconds)
        })
    }

    /// Width of `embed` for these options.
    #[pyo3(signature = (truncate_dim = None))]
    fn embedding_dim(&self, truncate_dim: Option<usize>) -> PyResult<usize> {
        let options = EmbedOptions::sentence_transformers(None, None, false, truncate_dim);
        self.engine.embed_dim(&options).map_err(to_py)
    }

    #[getter]
    fn device(&self) -> String {
        self.engine.backbone.device_name()
    }

    #[getter]
    fn max_seq_length(&self) -> PyResult<usize> {
        Ok(self.engine.tokenizer().map_err(to_py)?.max_len())
    }

    #[getter]
    fn prompts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, text) in &self.engine.layout.prompts {
            d.set_item(name, text)?;
        }
        Ok(d)
    }

    #[getter]
    fn default_prompt_name(&self) -> Option<String> {
        self.engine.layout.default_prompt_name.clone()
    }

    /// `config_sentence_transformers.json`'s `similarity_fn_name`, if any.
    #[getter]
    fn similarity_fn_name(&self) -> Option<String> {
        self.engine.layout.similarity_fn_name.clone()
    }

    /// Labels by id (`id2label`), or `LABEL_i` where the config names none; empty without a head.
    #[getter]
    fn labels(&self) -> Vec<String> {
        let n = self.engine.num_labels().unwrap_or(0);
        (0..n)
            .map(|i| {
                self.engine
                    .config
                    .id2label
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("LABEL_{i}"))
            })
            .collect()
    }

    #[getter]
    fn tasks(&self) -> Vec<&'static str> {
        self.engine.task_heads()
    }

    #[getter]
    fn parameters(&self) -> usize {
        self.engine.parameter_count()
    }
}

/// The library version the extension was built from.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngine>()?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
