"""Variate-label tokens (Toto 1.0's exogenous-variable fine-tuning): one learned token per variate, "target" or
"exogenous", placed before its patch sequence so that the model can tell known-future covariates from targets.

`Fusion` is Toto 1.0's module: it prepends the (L2-normalised) label embeddings. Given each row's number of leading
patches without any observed value (left padding), it places the label right before the row's first observed patch
instead: the label then does not count as an observed leading patch, and a left-padded series gets exactly the
positions it has alone (see `Transformer.forward`). `label_first` restores Toto 1.0's output layout afterwards.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class Fusion(torch.nn.Module):
    def forward(self, embeddings: Tensor, variate_label_embeds: Tensor | None = None,
                leading_invalid: Tensor | None = None) -> Tensor:
        """(batch, variate, patches, embed) and labels (batch, variate, 1, embed) -> (batch, variate, patches + 1,
        embed).

        `leading_invalid` (batch * variate,): left-padding patches per row; the label goes after them.
        """
        if variate_label_embeds is None:
            return embeddings
        labels = F.normalize(variate_label_embeds, p=2, dim=-1).to(dtype=embeddings.dtype, device=embeddings.device)
        labels = labels.expand(*embeddings.shape[:2], 1, embeddings.shape[-1])
        if leading_invalid is None or not bool(leading_invalid.any()):
            return torch.cat([labels, embeddings], dim=2)
        return insert_after_padding(embeddings, labels, leading_invalid.view(embeddings.shape[:2]))


def insert_after_padding(values: Tensor, inserted: Tensor, leading: Tensor) -> Tensor:
    """values (b, v, n, ...), inserted (b, v, 1, ...), leading (b, v) -> (b, v, n + 1, ...) with `inserted` at
    index `leading` of each row and the values in order around it."""
    n = values.shape[2]
    index = torch.arange(n + 1, device=values.device).expand(*values.shape[:2], n + 1)
    lead = leading[..., None]
    source = torch.where(index < lead, index, index - 1).clamp(0, n - 1)
    gathered = torch.gather(values, 2, _expand_index(source, values))
    at_label = (index == lead).view(*index.shape, *([1] * (values.ndim - 3)))
    return torch.where(at_label, inserted.to(values.dtype), gathered)


def label_first(hidden: Tensor, leading_invalid: Tensor | None) -> Tensor:
    """Undo `insert_after_padding`: (b, v, n + 1, d) with each row's label at index `leading` -> label at index 0."""
    if leading_invalid is None or not bool(leading_invalid.any()):
        return hidden
    lead = leading_invalid.view(hidden.shape[:2])[..., None]
    index = torch.arange(hidden.shape[2], device=hidden.device).expand(*hidden.shape[:3])
    # Output 0 is the label (at `lead`); output j >= 1 is data patch j - 1, stored at j - 1 before the label, j after.
    source = torch.where(index == 0, lead, torch.where(index - 1 < lead, index - 1, index))
    return torch.gather(hidden, 2, _expand_index(source, hidden))


def _expand_index(index: Tensor, like: Tensor) -> Tensor:
    return index.view(*index.shape, *([1] * (like.ndim - 3))).expand(*index.shape, *like.shape[3:])
