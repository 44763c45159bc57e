"""ModernBERT inference without torch, with sentence-transformers' API.

    import modernbert
    m = modernbert.Model("path/to/checkpoint-or/org-repo", device="auto")
    m.encode(["first text", "second"])          # ndarray [2, dim], float32
    m.predict([("query", "document")])          # a cross-encoder's scores

Every call releases the GIL while the engine runs, so one model serves many Python threads; outputs
are NumPy arrays that take over the engine's result vectors (no copy on the way to Python). A model pickles as its path and options,
so worker processes (multiprocessing, Ray) rebuild it. Errors carry the engine's one-line message:
``ValueError`` for bad input, a bad model directory or a task the model has no head for;
``RuntimeError`` for a device failure. Texts that are not ``str`` raise :class:`InputTypeError`,
which is both a ``TypeError`` and a ``ValueError``.
"""

from __future__ import annotations

import operator
import os
from typing import Iterable, Sequence

import numpy as np

from . import _native

__all__ = ["Model", "InputTypeError", "__version__"]
__version__ = _native.version()

_PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
# Texts per engine call while a progress bar is shown (the engine batches by tokens within a call).
_PROGRESS_CHUNK = 1024


class InputTypeError(TypeError, ValueError):
    """An input of the wrong type (e.g. a text that is not a ``str``)."""


def _texts(sentences, what: str = "sentences") -> tuple[list[str], bool]:
    """The texts of a call and whether a single ``str`` was given."""
    if isinstance(sentences, str):
        return [sentences], True
    if not isinstance(sentences, Iterable):
        raise InputTypeError(f"{what} must be a str or a list of str, not {type(sentences).__name__}")
    texts = list(sentences)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputTypeError(f"{what}[{i}] is {type(t).__name__}, not str")
    return texts, False


def _pairs(pairs) -> tuple[list[tuple[str, str]], bool]:
    """(first, second) text pairs and whether a single pair was given."""
    if isinstance(pairs, (list, tuple)) and len(pairs) == 2 and all(isinstance(p, str) for p in pairs):
        return [(pairs[0], pairs[1])], True
    if isinstance(pairs, str) or not isinstance(pairs, Iterable):
        raise InputTypeError(f"pairs must be a list of (str, str), not {type(pairs).__name__}")
    out = []
    for i, p in enumerate(pairs):
        if not (isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) for x in p)):
            raise InputTypeError(f"pairs[{i}] is not a pair of str")
        out.append((p[0], p[1]))
    return out, False


def _count(name: str, value, minimum: int = 1) -> int:
    """An int argument (NumPy ints too) of at least `minimum`, or a ValueError naming it."""
    try:
        v = operator.index(value)
    except TypeError:
        raise InputTypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if v < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {v}")
    return v


def _optional_str(name: str, value) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InputTypeError(f"{name} must be a str or None, not {type(value).__name__}")
    return value


def _no_torch(**kwargs) -> None:
    for name, value in kwargs.items():
        if value:
            raise ValueError(f"{name} needs torch, which this package does not use: convert the returned NumPy array")


class Model:
    """A ModernBERT checkpoint directory (or Hugging Face repo id ``org/name``) on a device.

    device: ``"auto"`` (CUDA device 0 when usable, else the CPU), ``"cpu"`` (exact f32),
    ``"cuda"`` / ``"cuda:N"``, or ``"emulated"`` (the GPU code path on the host, for testing).
    dtype: the GPU's activations, ``"bf16"`` or ``"fp16"`` (the CPU always computes in f32).
    max_batch_tokens: tokens per forward pass (longer calls are split, order kept).
    truncate: cut texts longer than the model's maximum (``False``: such a text is a ``ValueError``).
    """

    def __init__(
        self,
        model: str,
        device: str = "auto",
        dtype: str = "bf16",
        max_batch_tokens: int = 16384,
        truncate: bool = True,
        cuda_graphs: bool = True,
    ):
        model = os.fspath(model)
        if not isinstance(model, str):
            raise InputTypeError(f"model must be a path or a repo id, not {type(model).__name__}")
        if os.path.isdir(model):
            model = os.path.abspath(model)  # so that a pickled model loads from any directory
        for name, value in [("device", device), ("dtype", dtype)]:
            if not isinstance(value, str):
                raise InputTypeError(f"{name} must be a str, not {type(value).__name__}")
        max_batch_tokens = _count("max_batch_tokens", max_batch_tokens)
        self._options = dict(
            model=model,
            device=device,
            dtype=dtype,
            max_batch_tokens=max_batch_tokens,
            truncate=bool(truncate),
            cuda_graphs=bool(cuda_graphs),
        )
        self._engine = _native.Engine(**self._options)

    def __reduce__(self):
        # A model pickles as its path and options; the receiving process loads it again.
        return (_rebuild, (self._options,))

    def __repr__(self) -> str:
        return f"modernbert.Model({self._options['model']!r}, device={self.device!r})"

    # ---- what the model is ----------------------------------------------------------------------
    @property
    def device(self) -> str:
        """Where it runs, e.g. ``"cpu"``, ``"emulated sm80"`` or ``"cuda:0 NVIDIA H100 …"``."""
        return self._engine.device

    @property
    def max_seq_length(self) -> int:
        return self._engine.max_seq_length

    @property
    def prompts(self) -> dict[str, str]:
        return self._engine.prompts

    @property
    def default_prompt_name(self) -> str | None:
        return self._engine.default_prompt_name

    @property
    def similarity_fn_name(self) -> str:
        """The model's ``similarity_fn_name`` (sentence-transformers' default: cosine)."""
        return self._engine.similarity_fn_name or "cosine"

    @property
    def labels(self) -> list[str]:
        """A classifier's labels by id (``id2label``)."""
        return self._engine.labels

    @property
    def tasks(self) -> list[str]:
        """The heads this checkpoint has, e.g. ``["embeddings", "fill-mask"]``."""
        return self._engine.tasks

    def get_sentence_embedding_dimension(self, truncate_dim: int | None = None) -> int:
        full = self._engine.embedding_dim(None)
        t = self._truncate_dim(truncate_dim)
        return full if t is None else t

    def _truncate_dim(self, truncate_dim) -> int | None:
        """sentence-transformers' `truncate_dim`: None or 0 keep every dimension, a value past
        the width keeps them all (a slice); negative values are refused."""
        if truncate_dim is None:
            return None
        t = _count("truncate_dim", truncate_dim, minimum=0)
        return None if t == 0 or t >= self._engine.embedding_dim(None) else t

    # ---- embeddings (SentenceTransformer) -----------------------------------------------------
    def encode(
        self,
        sentences: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = False,
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        normalize_embeddings: bool | None = False,
        truncate_dim: int | None = None,
    ) -> np.ndarray:
        """``SentenceTransformer.encode``: ``[n, dim]`` (``[dim]`` for one ``str``).

        As sentence-transformers: ``prompt`` (a literal prefix) wins over ``prompt_name`` (a key of
        the model's prompts), else the model's ``default_prompt_name``; the model's own modules run
        (its Normalize included), then ``truncate_dim`` keeps the first dimensions, then
        ``normalize_embeddings`` L2-normalises; ``precision`` quantizes over all the call's
        embeddings as ``quantize_embeddings`` does (int8 / uint8 / binary / ubinary).
        ``batch_size`` is accepted for compatibility: the engine batches by ``max_batch_tokens``.
        """
        _no_torch(convert_to_tensor=convert_to_tensor)
        if precision not in _PRECISIONS:
            raise ValueError(f"precision {precision!r} is not supported ({', '.join(_PRECISIONS)})")
        batch_size = _count("batch_size", batch_size)
        texts, single = _texts(sentences)
        truncate_dim = self._truncate_dim(truncate_dim)
        args = (_optional_str("prompt_name", prompt_name), _optional_str("prompt", prompt),
                bool(normalize_embeddings), truncate_dim)
        if not texts:
            # As sentence-transformers, no texts is no embeddings (here with the right width).
            embeddings = np.zeros((0, self._engine.embedding_dim(truncate_dim)), np.float32)
        elif show_progress_bar and len(texts) > 1:
            from tqdm.auto import tqdm

            chunk = max(batch_size, _PROGRESS_CHUNK)
            parts = []
            with tqdm(total=len(texts), desc="Batches", unit="text") as bar:
                for start in range(0, len(texts), chunk):
                    parts.append(self._engine.embed(texts[start : start + chunk], *args))
                    bar.update(len(parts[-1]))
            embeddings = np.concatenate(parts)
        else:
            embeddings = self._engine.embed(texts, *args)
        if precision != "float32":
            embeddings = self._engine.quantize(embeddings, precision)
        return embeddings[0] if single else embeddings

    def encode_query(self, sentences, prompt_name: str | None = None, prompt: str | None = None, **kwargs) -> np.ndarray:
        """``encode`` with the model's ``query`` prompt (sentence-transformers' ``encode_query``)."""
        if prompt_name is None and prompt is None:
            prompt_name = "query"
        return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def encode_document(
        self, sentences, prompt_name: str | None = None, prompt: str | None = None, **kwargs
    ) -> np.ndarray:
        """``encode`` with the model's ``document`` prompt (sentence-transformers'
        ``encode_document``: the first of document, passage, corpus the model has)."""
        if prompt_name is None and prompt is None:
            prompt_name = next((n for n in ("document", "passage", "corpus") if n in self.prompts), None)
        return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def similarity(self, a, b) -> np.ndarray:
        """``[len(a), len(b)]`` float32 scores with the model's ``similarity_fn_name``, as
        sentence-transformers computes them: cosine (rows normalised, each norm at least 1e-12,
        then ``a @ b.T``), dot, or the negated euclidean / manhattan distance (NumPy, which
        releases the GIL in its matrix products)."""
        a = np.atleast_2d(np.asarray(a, dtype=np.float32))
        b = np.atleast_2d(np.asarray(b, dtype=np.float32))
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
            raise ValueError(f"similarity takes [n, dim] and [m, dim] embeddings, got shapes {a.shape} and {b.shape}")
        name = self.similarity_fn_name
        if name == "cosine":
            unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))  # noqa: E731
            return unit(a) @ unit(b).T
        if name == "dot":
            return a @ b.T
        if name == "euclidean":
            return -np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
        if name == "manhattan":
            return -np.abs(a[:, None, :] - b[None, :, :]).sum(-1)
        raise ValueError(f"similarity_fn_name {name!r}: single vectors compare by cosine, dot, euclidean or manhattan")

    # ---- cross-encoders (CrossEncoder) --------------------------------------------------------
    def predict(
        self,
        sentences,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        activation_fn=None,
        apply_softmax: bool = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
    ):
        """``CrossEncoder.predict``: a score per (first, second) pair, ``[n]`` for a one-label model
        (sigmoid of the logit unless the model's config names another activation), ``[n, labels]``
        otherwise; ``apply_softmax`` takes a softmax across labels afterwards, as there (for one
        label every score becomes 1); one pair gives one score."""
        _no_torch(convert_to_tensor=convert_to_tensor)
        if activation_fn is not None:
            raise ValueError("activation_fn is a torch module here: apply it to the returned NumPy scores instead")
        pairs, single = _pairs(sentences)
        if not pairs:
            return np.zeros((0,) if len(self.labels) == 1 else (0, len(self.labels)), np.float32)
        scores = self._engine.predict(pairs)
        if apply_softmax:
            # As sentence-transformers: a softmax across the label axis, also for one label
            # (every score is then 1).
            e = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        if scores.shape[1] == 1:
            scores = scores[:, 0]
        return scores[0] if single else scores

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        activation_fn=None,
        apply_softmax: bool = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
    ) -> list[dict]:
        """``CrossEncoder.rank``: ``[{"corpus_id", "score"[, "text"]}]`` by descending score."""
        if not isinstance(query, str):
            raise InputTypeError(f"query is {type(query).__name__}, not str")
        docs, _ = _texts(documents, "documents")
        if self._engine.labels and len(self._engine.labels) != 1:
            raise ValueError(f"rank needs a one-label cross-encoder; this one has {len(self._engine.labels)} labels")
        scores = self.predict(
            [(query, d) for d in docs],
            activation_fn=activation_fn,
            apply_softmax=apply_softmax,
            convert_to_tensor=convert_to_tensor,
        )
        order = np.argsort(-scores, kind="stable")
        if top_k is not None:
            order = order[:top_k]
        out = []
        for i in order:
            row = {"corpus_id": int(i), "score": scores[i]}
            if return_documents:
                row["text"] = docs[i]
            out.append(row)
        return out

    # ---- the other heads ----------------------------------------------------------------------
    def classify(self, texts):
        """Sequence classification: ``{"label", "label_id", "score", "logits"}`` per text."""
        t, single = _texts(texts, "texts")
        out = self._engine.classify(t) if t else []
        return out[0] if single else out

    def fill_mask(self, texts, top_k: int = 5):
        """Per text, per ``[MASK]``, the ``top_k`` predictions ``{"id", "token", "score"}``."""
        t, single = _texts(texts, "texts")
        out = self._engine.fill_mask(t, _count("top_k", top_k)) if t else []
        return out[0] if single else out

    def token_logits(self, texts):
        """Token classification: a ``[tokens, labels]`` array per text (special tokens included)."""
        t, single = _texts(texts, "texts")
        out = self._engine.token_logits(t) if t else []
        return out[0] if single else out

    def colbert(self, texts, is_query: bool = False):
        """ColBERT (PyLate) multi-vectors: a ``[vectors, dim]`` array per text."""
        t, single = _texts(texts, "texts")
        out = self._engine.colbert(t, is_query) if t else []
        return out[0] if single else out


def _rebuild(options: dict) -> Model:
    return Model(**options)
