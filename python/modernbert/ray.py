"""Scale-out on Ray Data: one model per actor, ids kept with their vectors.

    import ray, modernbert.ray
    ds = ray.data.read_parquet("s3://bucket/corpus/")            # columns: id, text
    out = ds.map_batches(
        modernbert.ray.Embedder,
        fn_constructor_kwargs=dict(model="/models/modernbert-embed", device="cuda"),
        batch_size=1024,        # texts per call; the engine splits by max_batch_tokens
        num_gpus=1,             # one GPU per actor on a GPU cluster (leave out on CPUs)
        concurrency=8,          # actors = GPUs in the cluster
    )
    out.write_parquet("s3://bucket/embeddings/")                  # columns: id, embedding

Each actor loads the model once (``__init__``) and embeds every batch Ray hands it (``__call__``);
Ray schedules the actors across the cluster's nodes. The output keeps the id column and adds the
embedding column (one fixed-size float32 vector per row, or int8 / uint8 with ``precision``);
the text column is dropped unless ``keep_text``.
"""

from __future__ import annotations

import numpy as np

from . import Model


class Embedder:
    """A callable class for ``ray.data.Dataset.map_batches`` (batch format ``"numpy"`` or
    ``"pandas"``); ``encode_kwargs`` go to :meth:`modernbert.Model.encode` (``prompt_name``,
    ``normalize_embeddings``, ``truncate_dim``, ``precision``)."""

    def __init__(
        self,
        model: str,
        device: str = "auto",
        dtype: str = "bf16",
        max_batch_tokens: int = 16384,
        text_column: str = "text",
        id_column: str = "id",
        output_column: str = "embedding",
        keep_text: bool = False,
        **encode_kwargs,
    ):
        self.model = Model(model, device=device, dtype=dtype, max_batch_tokens=max_batch_tokens)
        self.text_column, self.id_column, self.output_column = text_column, id_column, output_column
        self.keep_text = keep_text
        self.encode_kwargs = encode_kwargs

    def __call__(self, batch):
        texts = list(batch[self.text_column])
        vectors = self.model.encode(texts, **self.encode_kwargs)
        out = {self.id_column: np.asarray(batch[self.id_column])}
        if self.keep_text:
            out[self.text_column] = np.asarray(batch[self.text_column])
        out[self.output_column] = vectors
        return out
