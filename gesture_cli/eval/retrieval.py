"""Cross-modal retrieval: Recall@k between pose-sequence embeddings and sentence embeddings (`gx pose-pretrain`)."""

from __future__ import annotations

import numpy as np


def retrieval_metrics(pose_emb, text_emb, sample_text: np.ndarray, *, ks=(1, 5)) -> dict[str, float]:
    """Recall@k both ways between N pose embeddings and M distinct-sentence embeddings (unit rows).

    sample_text [N]: the row of each sample's sentence in text_emb. Pose -> text: the rank of a sample's
    own sentence among the M. Text -> pose: a sentence counts as found at k when any of its samples is
    among the k closest pose sequences.
    """
    import torch

    sim = pose_emb.float() @ text_emb.float().t()  # [N, M]
    own = torch.as_tensor(sample_text, dtype=torch.int64)
    own_score = sim.gather(1, own[:, None])  # [N, 1]
    p2t_rank = (sim > own_score).sum(1)  # 0 = first
    order = sim.t().argsort(dim=1, descending=True)  # [M, N] poses by similarity for each sentence
    hit_rank = []
    for m in range(sim.shape[1]):
        mine = (own[order[m]] == m).nonzero()
        hit_rank.append(int(mine[0, 0]) if len(mine) else sim.shape[0])
    t2p_rank = torch.tensor(hit_rank)
    present = torch.zeros(sim.shape[1], dtype=torch.bool)
    present[own] = True
    out = {}
    for k in ks:
        out[f"val_r{k}"] = round(float((p2t_rank < k).float().mean()), 6)
        out[f"val_t2p_r{k}"] = round(float((t2p_rank[present] < k).float().mean()), 6)
    return out


__all__ = ["retrieval_metrics"]
