"""`gx pose-pretrain` and `gx pose-finetune`: sign-to-text from keypoint sequences.

Three layers, as in train/lora.py:
    pretrain_pose(cfg, run) / finetune_pose(cfg, run)   data, run-dir step, checkpoints, artifacts under pose/
                                                        (train/pose_pretrain.py, train/pose_finetune.py through the
                                                        trainer skeleton; what both share: train/pose_common.py)
    fit(...)                                            gesture_cli.train.loop: the shared training loop
    PoseTextAligner / PoseToText                        gesture_cli.models.sign2text (+ models/text.py for UMT5)

Pretraining aligns pooled pose embeddings with the pooled embeddings of a frozen UMT5 encoder
(symmetric InfoNCE, learnable temperature). The text encoder never trains: its embedding of each distinct sentence is computed once
before training. Each evaluation ranks the validation split's distinct sentences for every pose
sequence (R@1, R@5 pose -> text, eval/retrieval.py; chance R@1 = 1 / number of distinct sentences) and
the best R@1 picks `checkpoints/best/`.

Fine-tuning starts from `pose/pretrain/encoder.safetensors` (`--init auto`: when it exists, else from
scratch with a notice; `--init pretrained` requires it; `--init scratch` ignores it) and uses the text
model pretraining was aligned with (its tokenizer and, for tiny-umt5, its weights come from
`pose/pretrain/text_model/`). Pose tokens are projected into UMT5 (models/sign2text.py: `--bridge
encoder|direct`), trained with teacher forcing; each evaluation decodes the validation split (greedy,
or beam search with `--num-beams`) and scores sacrebleu BLEU-4, which picks `checkpoints/best/`.

Data. Samples are normalised once (`--normalize`, data/pose.py) and reduced to the encoder's body
parts; a training batch takes at most `--max-frames` frames per sequence, one random frame from each of
that many equal segments (seeded by the batch's sample indices, so a resumed run draws the same
frames); evaluation takes evenly spaced ones. Splits: the dataset's own train / val / test (pose
folders without splits get a stable 80/10/10 by sample id); an empty val split is replaced by a seeded
`--val-fraction` of train.

Checkpoints and the atomic final directory work as in train/lora.py: checkpoints are written live to
`pose/<stage>/checkpoints/` and hard-linked into the staged directory that replaces `pose/<stage>/`.

This module is where the commands import both trainers from.
"""

from __future__ import annotations

from gesture_cli.train.pose_finetune import PoseFinetuneConfig, finetune_pose
from gesture_cli.train.pose_pretrain import PosePretrainConfig, pretrain_pose

__all__ = ["PoseFinetuneConfig", "PosePretrainConfig", "finetune_pose", "pretrain_pose"]
