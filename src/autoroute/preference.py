"""Preference model: RouteLLM's matrix factorization generalised to N models.

Every prompt is represented by a frozen feature vector ``x`` (a sentence embedding,
optionally concatenated with cheap extra features).  Every model ``m`` has a learned
vector ``v_m`` and bias ``b_m``.  The latent quality of model ``m`` on the prompt is::

    s(x, m) = <proj(x), v_m> + b_m + d(x)

where ``proj`` is a learned linear map or small MLP and ``d(x)`` a learned prompt
difficulty shared by all models.  ``sigmoid(s)`` is the predicted quality in [0, 1]
(the probability of a correct / acceptable answer).

Training signals (all optional, weighted by the config):

* **outcomes** ``(prompt_idx, model, score)`` with a score in [0, 1] (0/1 correctness or
  graded): binary cross-entropy of ``sigmoid(s)`` against the score.
* **outcome-derived pairs**: for two models scored on the same prompt with different
  scores, a Bradley-Terry term ``sigmoid(s_a - s_b)`` against ``1[score_a > score_b]``.
* **comparisons** ``(prompt_idx, model_a, model_b, winner | preference)``: a
  Bradley-Terry loss ``P(a beats b) = sigmoid(alpha * (s_a - s_b))`` with a learned
  scale ``alpha`` (judges and humans are noisier than correctness).  ``winner`` in
  ``{"model_a", "model_b", "tie", "tie_bothbad"}`` becomes a target of 1 / 0 / 0.5 / 0.5;
  a float ``preference`` column (= P(a beats b)) is used as a soft target directly.
  Optionally ``tie_bothbad`` also adds a "both answers were bad" outcome of 0.

Cold start (IRT-Router / EmbedLLM style): when ``model_features`` are given (one
numeric row per model: family, release order, price tier, measured Arena priors, ...,
see :mod:`autoroute.model_features`), a model's vector and bias are predicted from its
features and a free part is shrunk towards that prediction::

    v_m = W f_m + u_m,   b_m = logit(prior_m) + w . f_m + c + beta_m,
    u_m ~ N(0, s^2),     beta_m ~ N(0, s^2)      (s^2 ~ 1 / prior_strength)

so ``W`` and ``w`` are learned from every model that has rows, a model with many rows
fits its own ``u_m``, and a model with no rows at all (a product model nobody has
published per-prompt outcomes for) is scored through its features alone.  Without
features the bias is pulled toward ``logit(prior_quality)`` and the vector toward 0, so
an unseen model predicts exactly its prior.  :meth:`PreferenceModel.evidence` says per
model whether its predictions are learned from its own rows or rest on its features.

Source offsets (training only): an outcome row of source ``k`` is scored
``s(x, m) + delta_k``, ``delta_k`` a free difficulty offset per source (SWE-bench issues
are harder than GSM8K questions for every model).  The product's models are each
measured on one source only (Claude Opus 4.5 on SWE-bench, GPT-4o on ZeroEval) and no
model is measured on both, so without the offsets a source's difficulty lands in the
levels of the models measured there, and a model measured on a hard source looks worse
everywhere than one measured on an easy source.  With them, a source's common level goes
to ``delta_k``, the model biases keep the spread around their priors (the Arena-measured
levels that do compare models across sources), and predictions use no offset.
Comparisons and outcome pairs compare two models on the same prompt, so an offset
cancels there.

Calibration: :meth:`PreferenceModel.calibrate` fits one logit map ``a * s + b`` on
held-out (validation) outcomes, so every model's predicted quality is on one calibrated
scale: the probability of a good answer.

Numpy in, numpy out; training is deterministic given ``config.seed``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = ["PreferenceConfig", "PreferenceModel", "winner_to_target"]

_WINNER_TARGET = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5, "tie_bothbad": 0.5, "tie (bothbad)": 0.5}


def winner_to_target(winner: str) -> float:
    """Map an arena-style ``winner`` label to P(model_a beats model_b)."""
    try:
        return _WINNER_TARGET[winner]
    except KeyError as exc:
        raise ValueError(f"unknown winner label {winner!r}") from exc


@dataclass
class PreferenceConfig:
    """Hyper-parameters of :class:`PreferenceModel` (stored inside saved models)."""

    dim: int = 64  # size of the model vectors / projected prompt
    hidden: int = 256  # hidden units of the projection MLP; 0 = linear projection
    dropout: float = 0.1
    lr: float = 3e-3
    epochs: int = 8
    batch_size: int = 4096  # rows (outcomes + pairs) per step, batched by prompt
    weight_decay: float = 1e-4  # AdamW weight decay on the projection
    w_outcome: float = 1.0  # BCE on per-prompt outcomes
    w_outcome_pairs: float = 0.5  # BT on pairs derived from outcomes with different scores
    w_pair: float = 1.0  # BT on explicit comparisons
    bothbad_outcome_weight: float = 0.0  # 'tie_bothbad' -> outcome 0 for both models
    prior_strength: float = 20.0  # pseudo-observations of the per-model prior
    default_prior: float = 0.5  # prior quality of a model without an explicit prior
    standardize: bool = True  # z-score the input features with training statistics
    learned_min_rows: int = 50  # a model with fewer rows of its own is "cold": its features carry it
    source_offsets: bool = True  # a training-only difficulty offset per outcome source (see the module docstring)
    source_offset_strength: float = 1.0  # pseudo-observations pulling each source offset to 0 (pins the mean)
    seed: int = 0


class _Net(nn.Module):
    def __init__(self, d_in: int, n_models: int, cfg: PreferenceConfig, n_feat: int = 0):
        super().__init__()
        if cfg.hidden > 0:
            self.proj = nn.Sequential(
                nn.Dropout(cfg.dropout), nn.Linear(d_in, cfg.hidden), nn.GELU(),
                nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.dim + 1),
            )
        else:
            self.proj = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(d_in, cfg.dim + 1))
        self.model_vec = nn.Parameter(torch.zeros(n_models, cfg.dim))
        self.model_bias = nn.Parameter(torch.zeros(n_models))
        self.log_alpha = nn.Parameter(torch.zeros(()))
        nn.init.normal_(self.model_vec, std=0.1)
        self.n_feat = n_feat
        if n_feat:  # v_m = W f_m + u_m, b_m = b0_m + w . f_m + c + beta_m
            self.register_buffer("model_feats", torch.zeros(n_models, n_feat))
            self.feat_vec = nn.Linear(n_feat, cfg.dim, bias=False)
            self.feat_bias = nn.Linear(n_feat, 1)
            nn.init.zeros_(self.feat_vec.weight)   # a feature no trained model varies in stays without effect
            nn.init.zeros_(self.feat_bias.weight)
            nn.init.zeros_(self.feat_bias.bias)
            nn.init.normal_(self.model_vec, std=0.01)

    def model_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-model vectors ``[n_models, dim]`` and biases ``[n_models]``."""
        if not self.n_feat:
            return self.model_vec, self.model_bias
        return (self.model_vec + self.feat_vec(self.model_feats),
                self.model_bias + self.feat_bias(self.model_feats).squeeze(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Latent scores ``[n_prompts, n_models]``."""
        h = self.proj(x)
        p, d = h[:, :-1], h[:, -1:]
        vec, bias = self.model_params()
        return p @ vec.T + bias + d


@dataclass
class _State:
    model_ids: list[str] = field(default_factory=list)
    priors: dict[str, float] = field(default_factory=dict)
    feat_mean: np.ndarray | None = None
    feat_std: np.ndarray | None = None
    d_in: int = 0
    rows: dict[str, int] = field(default_factory=dict)          # training rows per model
    feature_names: list[str] = field(default_factory=list)      # model-feature columns ([] = none)
    feature_sources: dict[str, str] = field(default_factory=dict)  # model -> what its features rest on
    calibration: tuple[float, float] = (1.0, 0.0)                  # predicted logit -> a * logit + b


class PreferenceModel:
    """N-model matrix-factorization preference model (see module docstring)."""

    def __init__(self, config: PreferenceConfig | None = None):
        self.config = config or PreferenceConfig()
        self._st = _State()
        self._net: _Net | None = None
        self.source_offsets: dict[str, float] = {}   # the last fit's per-source offsets (training only, not saved)

    # ------------------------------------------------------------------ helpers
    @property
    def model_ids(self) -> list[str]:
        """Models the network was trained with (order of its vectors)."""
        return list(self._st.model_ids)

    def _prior_logit(self, m: str) -> float:
        p = float(self._st.priors.get(m, self.config.default_prior))
        p = min(max(p, 1e-4), 1 - 1e-4)
        return math.log(p / (1 - p))

    def _features(self, emb: np.ndarray) -> torch.Tensor:
        x = np.asarray(emb, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self._st.d_in:
            raise ValueError(f"expected embeddings of shape [n, {self._st.d_in}], got {x.shape}")
        if self.config.standardize:
            x = (x - self._st.feat_mean) / self._st.feat_std
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    # ------------------------------------------------------------------ training
    def fit(
        self,
        embeddings: np.ndarray,
        comparisons: pd.DataFrame | None,
        outcomes: pd.DataFrame | None,
        model_ids: Sequence[str],
        priors: Mapping[str, float] | None = None,
        model_features: pd.DataFrame | None = None,
        feature_sources: Mapping[str, str] | None = None,
    ) -> "PreferenceModel":
        """Train from scratch.

        Args:
            embeddings: ``[n_prompts, d]`` prompt features; ``prompt_idx`` indexes rows.
            comparisons: columns ``prompt_idx, model_a, model_b`` and either ``winner``
                (``model_a|model_b|tie|tie_bothbad``) or a float ``preference`` = P(a
                beats b); optional ``weight``.  May be ``None`` or empty.
            outcomes: columns ``prompt_idx, model, score`` (score in [0, 1]); optional
                ``weight``.  May be ``None`` or empty.
            model_ids: the models to learn; rows naming other models are ignored.
            priors: optional prior quality per model id (default ``config.default_prior``).
            model_features: optional numeric features per model (index = model id; NaN =
                unknown); models in ``model_ids`` without a row get zeros.  Turns on the
                cold-start parameterisation of the module docstring.
            feature_sources: per model, what its features rest on (``measured_prior``,
                ``proxy_prior``, ``family_prior``); reported by :meth:`evidence`.
        Returns:
            ``self``.
        """
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        x_np = np.asarray(embeddings, dtype=np.float32)
        mids = list(dict.fromkeys(model_ids))
        col = {m: i for i, m in enumerate(mids)}
        self._st = _State(model_ids=mids, priors=dict(priors or {}), d_in=x_np.shape[1],
                          feature_sources=dict(feature_sources or {}))
        feats = self._model_feature_matrix(model_features, mids, self._models_with_rows(outcomes, comparisons))
        if cfg.standardize:  # statistics of the prompts that carry training signal only
            used = set()
            for df, cols in ((comparisons, ("prompt_idx",)), (outcomes, ("prompt_idx",))):
                if df is not None and len(df):
                    used.update(np.unique(df[cols[0]].to_numpy(np.int64)).tolist())
            rows = x_np[np.array(sorted(used), dtype=np.int64)] if used else x_np
            self._st.feat_mean = rows.mean(0)
            self._st.feat_std = rows.std(0) + 1e-6
        x = self._features(x_np)

        # ---- outcomes
        o_p = np.zeros(0, np.int64); o_m = np.zeros(0, np.int64); o_y = np.zeros(0, np.float32); o_w = np.zeros(0, np.float32)
        o_g, groups = None, []   # source of each outcome row (training-only offsets), or None
        if outcomes is not None and len(outcomes):
            o = outcomes[outcomes["model"].isin(col)]
            o_p = o["prompt_idx"].to_numpy(np.int64)
            o_m = o["model"].map(col).to_numpy(np.int64)
            o_y = np.clip(o["score"].to_numpy(np.float32), 0, 1)
            o_w = o["weight"].to_numpy(np.float32) if "weight" in o else np.ones(len(o), np.float32)
            if cfg.source_offsets and "source" in o:
                o_g, groups = pd.factorize(o["source"].astype(str))
                o_g = o_g.astype(np.int64)
        # ---- explicit comparisons
        c_p = np.zeros(0, np.int64); c_a = np.zeros(0, np.int64); c_b = np.zeros(0, np.int64)
        c_y = np.zeros(0, np.float32); c_w = np.zeros(0, np.float32)
        if comparisons is not None and len(comparisons):
            c = comparisons[comparisons["model_a"].isin(col) & comparisons["model_b"].isin(col)]
            c = c[c["model_a"] != c["model_b"]]
            c_p = c["prompt_idx"].to_numpy(np.int64)
            c_a = c["model_a"].map(col).to_numpy(np.int64)
            c_b = c["model_b"].map(col).to_numpy(np.int64)
            if "preference" in c and c["preference"].notna().all():
                c_y = np.clip(c["preference"].to_numpy(np.float32), 0, 1)
            else:
                c_y = np.array([winner_to_target(w) for w in c["winner"]], np.float32)
            c_w = c["weight"].to_numpy(np.float32) if "weight" in c else np.ones(len(c), np.float32)
            if cfg.bothbad_outcome_weight > 0 and "winner" in c:
                bb = (c["winner"].isin(["tie_bothbad", "tie (bothbad)"])).to_numpy()
                k = int(bb.sum())
                if k:
                    o_p = np.concatenate([o_p, c_p[bb], c_p[bb]])
                    o_m = np.concatenate([o_m, c_a[bb], c_b[bb]])
                    o_y = np.concatenate([o_y, np.zeros(2 * k, np.float32)])
                    o_w = np.concatenate([o_w, np.full(2 * k, cfg.bothbad_outcome_weight, np.float32)])
                    if o_g is not None:   # "both answers were bad" rows: a source of their own
                        o_g = np.concatenate([o_g, np.full(2 * k, len(groups), np.int64)])
                        groups = list(groups) + ["comparisons:bothbad"]
        # ---- outcome-derived pairs (models scored differently on the same prompt)
        q_p, q_a, q_b, q_y = self._outcome_pairs(o_p, o_m, o_y) if cfg.w_outcome_pairs > 0 else (np.zeros(0, np.int64),) * 3 + (np.zeros(0, np.float32),)

        counts = np.bincount(np.concatenate([o_m, c_a, c_b]), minlength=len(mids))
        self._st.rows = {m: int(counts[i]) for i, m in enumerate(mids)}
        net = _Net(x.shape[1], len(mids), cfg, n_feat=0 if feats is None else feats.shape[1])
        prior_logits = torch.tensor([self._prior_logit(m) for m in mids], dtype=torch.float32)
        with torch.no_grad():
            net.model_bias.copy_(prior_logits)
            if feats is not None:
                net.model_feats.copy_(torch.from_numpy(np.array(feats)))
        self._net = net
        n_obs = max(len(o_p) + len(c_p) + len(q_p), 1)
        if n_obs <= 1 and len(o_p) + len(c_p) == 0:
            return self  # nothing to learn: predictions are the priors

        decayed = lambda n, p: n.startswith(("proj", "feat_")) and p.ndim > 1  # noqa: E731
        decay = [p for n, p in net.named_parameters() if decayed(n, p)]
        no_decay = [p for n, p in net.named_parameters() if not decayed(n, p)]
        # training-only difficulty offset per outcome source (not part of the saved network)
        offsets = torch.zeros(len(groups) if o_g is not None else 0, requires_grad=True)
        if len(offsets):
            no_decay.append(offsets)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
        steps = max(1, math.ceil(n_obs / cfg.batch_size))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps * cfg.epochs, pct_start=0.1)
        # Batches are built over *prompts* (each prompt's projection is computed once per
        # epoch, with all of its rows), which is ~10x cheaper than batching over rows.
        used = np.unique(np.concatenate([o_p, c_p, q_p]))
        x_used = x[torch.from_numpy(used)]
        loc = lambda a: np.searchsorted(used, a)  # noqa: E731  global prompt idx -> row of x_used
        t = lambda a: torch.from_numpy(np.array(a))  # noqa: E731  (copy: inputs may be read-only)
        sets = {  # name -> (local prompt, tensors...)
            "o": (loc(o_p), t(o_m), t(o_y), t(o_w), t(o_g if o_g is not None else np.zeros(len(o_p), np.int64))),
            "c": (loc(c_p), t(c_a), t(c_b), t(c_y), t(c_w)),
            "q": (loc(q_p), t(q_a), t(q_b), t(q_y)),
        }
        n_p = len(used)
        per_step = max(1, math.ceil(n_p / steps))
        bce = nn.functional.binary_cross_entropy_with_logits
        net.train()
        for _ in range(cfg.epochs):
            perm = rng.permutation(n_p)
            pos = np.empty(n_p, np.int64)
            pos[perm] = np.arange(n_p)
            split = {}
            for k, (lp, *_rest) in sets.items():
                bid = pos[lp] // per_step
                order = np.argsort(bid, kind="stable")
                bounds = np.searchsorted(bid[order], np.arange(steps + 1))
                split[k] = (order, bounds)
            for s_ in range(steps):
                batch_prompts = perm[s_ * per_step:(s_ + 1) * per_step]
                if len(batch_prompts) == 0:
                    continue
                scores = net(x_used[torch.from_numpy(batch_prompts)])
                rows = {}
                for k in sets:
                    order, bounds = split[k]
                    idx = order[bounds[s_]:bounds[s_ + 1]]
                    rows[k] = (torch.from_numpy(idx), torch.from_numpy(pos[sets[k][0][idx]] - s_ * per_step))
                loss = torch.zeros(())
                (io, ro), (ic, rc), (iq, rq) = rows["o"], rows["c"], rows["q"]
                _, om, oy, ow, og = sets["o"]
                _, ca, cb, cy, cw = sets["c"]
                _, qa, qb, qy = sets["q"]
                if len(io) and cfg.w_outcome > 0:
                    z = scores[ro, om[io]]
                    if len(offsets):
                        z = z + offsets[og[io]]
                    loss = loss + cfg.w_outcome * (bce(z, oy[io], reduction="none") * ow[io]).sum() / n_obs
                if len(ic) and cfg.w_pair > 0:
                    z = net.log_alpha.exp() * (scores[rc, ca[ic]] - scores[rc, cb[ic]])
                    loss = loss + cfg.w_pair * (bce(z, cy[ic], reduction="none") * cw[ic]).sum() / n_obs
                if len(iq):
                    z = scores[rq, qa[iq]] - scores[rq, qb[iq]]
                    loss = loss + cfg.w_outcome_pairs * bce(z, qy[iq], reduction="sum") / n_obs
                # MAP prior on the per-model free parameters (weight = prior_strength pseudo-obs):
                # the bias toward its prior (+ feature prediction), the vector toward W f_m (or 0)
                prior = ((net.model_bias - prior_logits) ** 2).sum() + (net.model_vec ** 2).sum()
                loss = loss + cfg.prior_strength * prior / (n_obs * steps)
                if len(offsets):
                    loss = loss + cfg.source_offset_strength * (offsets ** 2).sum() / (n_obs * steps)
                opt.zero_grad()
                (loss * steps).backward()
                opt.step()
                sched.step()
        net.eval()
        if len(offsets):
            with torch.no_grad():
                vec, bias = net.model_params()
                mean_proj = net.proj(x_used).mean(0)[:-1]     # a model's vector on the mean prompt acts as a bias
                level = (bias + vec @ mean_proj).numpy()
                self._centre_on_priors(net, offsets, level - prior_logits.numpy(), o_m, o_g, c_a, c_b,
                                       np.array([m in (priors or {}) for m in mids]))
        self.source_offsets = {str(g): float(v) for g, v in zip(groups, offsets.detach().numpy())}
        return self

    @staticmethod
    def _centre_on_priors(net: "_Net", offsets: torch.Tensor, dev: np.ndarray, o_m: np.ndarray,
                          o_g: np.ndarray, c_a: np.ndarray, c_b: np.ndarray, informative: np.ndarray) -> None:
        """Move each connected block of (models, sources) along the direction the data cannot see.

        Models and sources joined by outcome rows (and models joined by comparisons) form blocks;
        within a block, adding ``t`` to every source offset and ``-t`` to every model bias changes no
        training prediction (a model without rows is a block of its own). The prior decides ``t``: the block's models with a given prior sit, on
        average, at their priors (``dev``: each model's level on the mean training prompt minus its prior
        logit). Gradient steps along this flat direction are too small to find it."""
        n_m, n_g = len(net.model_bias), len(offsets)
        parent = list(range(n_m + n_g))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i
        for a, b in set(zip(o_m.tolist(), (o_g + n_m).tolist())) | set(zip(c_a.tolist(), c_b.tolist())):
            parent[find(a)] = find(b)
        root = np.array([find(i) for i in range(n_m + n_g)])
        for r in np.unique(root[:n_m][informative]):
            # a block with outcome sources moves their offsets the other way; one joined by comparisons
            # only (Bradley-Terry sees differences) or a model without rows moves alone
            models = np.flatnonzero((root[:n_m] == r) & informative)
            t = float(dev[models].mean())
            net.model_bias[torch.from_numpy(np.flatnonzero(root[:n_m] == r))] -= t
            offsets[torch.from_numpy(np.flatnonzero(root[n_m:] == r))] += t

    @staticmethod
    def _models_with_rows(outcomes: pd.DataFrame | None, comparisons: pd.DataFrame | None) -> set[str]:
        out = set(outcomes["model"]) if outcomes is not None and len(outcomes) else set()
        if comparisons is not None and len(comparisons):
            out |= set(comparisons["model_a"]) | set(comparisons["model_b"])
        return out

    def _model_feature_matrix(self, feats: pd.DataFrame | None, mids: list[str], trained: set[str]
                              ) -> np.ndarray | None:
        """``[n_models, k]`` feature rows standardized with the statistics of the models
        that have rows (what the map is learned from), clipped to +-3 so a cold model
        never sits far outside what was learned; NaN and missing models -> 0 (the mean)."""
        if feats is None or feats.shape[1] == 0:
            self._st.feature_names = []
            return None
        f = feats.apply(pd.to_numeric, errors="coerce").astype(np.float64)
        f = f[~f.index.duplicated()]
        ref = f[f.index.isin(trained)] if f.index.isin(trained).sum() >= 2 else f
        mean, std = ref.mean(axis=0).fillna(0.0), ref.std(axis=0, ddof=0).replace(0.0, 1.0).fillna(1.0)
        z = ((f - mean) / std).clip(-3.0, 3.0).reindex(mids).fillna(0.0)
        self._st.feature_names = [str(c) for c in f.columns]
        return z.to_numpy(np.float32)

    def evidence(self, model_ids: Sequence[str]) -> list[str]:
        """Where each model's predicted quality comes from: ``learned`` (trained on at
        least ``learned_min_rows`` rows of its own), else what its features rest on
        (``measured_prior`` / ``proxy_prior`` / ``family_prior``), else ``prior``
        (neither rows nor features: the constant prior quality)."""
        out = []
        for m in model_ids:
            if self._st.rows.get(m, 0) >= self.config.learned_min_rows:
                out.append("learned")
            elif m in self._st.model_ids and self._st.feature_names and m in self._st.feature_sources:
                out.append(self._st.feature_sources[m])
            else:
                out.append("prior")
        return out

    @property
    def feature_names(self) -> list[str]:
        return list(self._st.feature_names)

    @staticmethod
    def _outcome_pairs(p: np.ndarray, m: np.ndarray, y: np.ndarray):
        """All (a, b) pairs of models scored on the same prompt with score_a > score_b."""
        if len(p) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        order = np.lexsort((m, p))
        p, m, y = p[order], m[order], y[order]
        starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
        ends = np.r_[starts[1:], len(p)]
        out_p, out_a, out_b = [], [], []
        for s, e in zip(starts, ends):
            if e - s < 2:
                continue
            yy, mm = y[s:e], m[s:e]
            ia, ib = np.nonzero(yy[:, None] > yy[None, :])
            if len(ia):
                out_p.append(np.full(len(ia), p[s])); out_a.append(mm[ia]); out_b.append(mm[ib])
        if not out_p:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        pa = np.concatenate(out_p).astype(np.int64)
        return pa, np.concatenate(out_a).astype(np.int64), np.concatenate(out_b).astype(np.int64), np.ones(len(pa), np.float32)

    # ------------------------------------------------------------------ inference
    def predict_logits(self, embeddings: np.ndarray, model_ids: Sequence[str]) -> np.ndarray:
        """Latent scores ``[n_prompts, len(model_ids)]``; unknown models get ``logit(prior)``."""
        if self._net is None:
            raise RuntimeError("model is not fitted")
        x = self._features(embeddings)
        with torch.no_grad():
            self._net.eval()
            s = self._net(x).numpy().astype(np.float64)
        a, b = self._st.calibration
        col = {m: i for i, m in enumerate(self._st.model_ids)}
        out = np.empty((x.shape[0], len(model_ids)), dtype=np.float64)
        for j, m in enumerate(model_ids):
            out[:, j] = a * s[:, col[m]] + b if m in col else self._prior_logit(m)
        return out

    def calibrate(self, embeddings: np.ndarray, outcomes: pd.DataFrame) -> tuple[float, float]:
        """Fit the logit map ``a * s + b`` (Platt scaling, one for every model) on held-out
        outcomes ``prompt_idx, model, score`` (validation rows), so predicted quality is a
        calibrated probability of a good answer; returns ``(a, b)``."""
        from scipy.optimize import minimize

        self._st.calibration = (1.0, 0.0)
        o = outcomes[outcomes["model"].isin(self._st.model_ids)]
        if o.empty:
            raise ValueError("calibrate: no outcome rows of the model's models")
        s = np.empty(len(o))
        for m, idx in o.groupby("model").indices.items():
            s[idx] = self.predict_logits(embeddings[o["prompt_idx"].to_numpy()[idx]], [m])[:, 0]
        y = np.clip(o["score"].to_numpy(float), 0, 1)

        def nll(ab):
            z = ab[0] * s + ab[1]
            return float(np.mean(np.logaddexp(0, z) - y * z))
        res = minimize(nll, np.array([1.0, 0.0]), method="L-BFGS-B", bounds=[(0.05, 5.0), (-5.0, 5.0)])
        self._st.calibration = (float(res.x[0]), float(res.x[1]))
        return self._st.calibration

    def predict(self, embeddings: np.ndarray, model_ids: Sequence[str]) -> np.ndarray:
        """Predicted quality in [0, 1], shape ``[n_prompts, len(model_ids)]``."""
        return 1.0 / (1.0 + np.exp(-self.predict_logits(embeddings, model_ids)))

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        """Everything needed to rebuild the model, config included (torch-serialisable)."""
        if self._net is None:
            raise RuntimeError("model is not fitted")
        return {
            "config": asdict(self.config),
            "net": {k: v.detach().clone() for k, v in self._net.state_dict().items()},
            "model_ids": list(self._st.model_ids),
            "priors": dict(self._st.priors),
            "feat_mean": None if self._st.feat_mean is None else torch.from_numpy(self._st.feat_mean),
            "feat_std": None if self._st.feat_std is None else torch.from_numpy(self._st.feat_std),
            "d_in": self._st.d_in,
            "rows": dict(self._st.rows),
            "feature_names": list(self._st.feature_names),
            "feature_sources": dict(self._st.feature_sources),
            "calibration": list(self._st.calibration),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "PreferenceModel":
        """Inverse of :meth:`state_dict`."""
        obj = cls(PreferenceConfig(**state["config"]))
        obj._st = _State(
            model_ids=list(state["model_ids"]), priors=dict(state["priors"]), d_in=int(state["d_in"]),
            feat_mean=None if state["feat_mean"] is None else state["feat_mean"].numpy(),
            feat_std=None if state["feat_std"] is None else state["feat_std"].numpy(),
            rows=dict(state.get("rows", {})), feature_names=list(state.get("feature_names", [])),
            feature_sources=dict(state.get("feature_sources", {})),
            calibration=tuple(state.get("calibration", (1.0, 0.0))),
        )
        obj._net = _Net(obj._st.d_in, len(obj._st.model_ids), obj.config, n_feat=len(obj._st.feature_names))
        obj._net.load_state_dict(state["net"])
        obj._net.eval()
        return obj

    def save(self, path: str | Path) -> None:
        """Write the model (weights + config + model ids + priors) to ``path``."""
        torch.save(self.state_dict(), str(path))

    @classmethod
    def load(cls, path: str | Path) -> "PreferenceModel":
        """Read a model written by :meth:`save`."""
        return cls.from_state_dict(torch.load(str(path), map_location="cpu", weights_only=False))
