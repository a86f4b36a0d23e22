"""Inspection page of one SAE (HTML): top-activating held-out contexts of sampled latents, and the absorption eval's absorbed words."""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from masksae.activations import special_positions
from masksae.models import LoadedModel
from masksae.resources import split_sequences
from masksae.saes import SparseAutoencoder

MAX_ABSORBED_ROWS = 300


@dataclass(frozen=True)
class InspectionSettings:
    """Sizes of the page (`eval.inspection`): latents shown, held-out sequences scanned, contexts per latent, tokens around the peak."""

    latents: int
    absorbing_latents: int
    sequences: int
    contexts: int
    window: int
    seed: int

    @classmethod
    def from_config(cls, cfg: DictConfig) -> InspectionSettings:
        section = cfg.eval.inspection
        return cls(int(section.latents), int(section.absorbing_latents), int(section.sequences), int(section.contexts),
                   int(section.window), int(cfg.eval.seed))


@dataclass(frozen=True)
class Context:
    """A peak activation of one latent: the tokens around it and each token's activation."""

    tokens: list[str]
    activations: list[float]
    peak: int


@dataclass(frozen=True)
class LatentCard:
    """One latent: how often it fires on the scanned text, its top contexts, and the letters whose words it absorbs."""

    latent: int
    frequency: float
    contexts: list[Context]
    absorbs: dict[str, int]


@torch.no_grad()
def held_out_latents(model: LoadedModel, sae: SparseAutoencoder, ids_NS: torch.Tensor, layer: int, batch_size: int) -> torch.Tensor:
    """SAE latents of every position of the sequences, zero at special positions, [N, S, F]."""
    keep_NS = ~special_positions(ids_NS, model.special_ids())
    chunks = []
    for ids_BS in ids_NS.split(batch_size):
        resid_BSD = model.residual_at(ids_BS, layer).float().cpu()
        chunks.append(sae.encode(resid_BSD.flatten(0, 1)).view(*ids_BS.shape, sae.d_sae))
    return torch.cat(chunks) * keep_NS[..., None]


def absorbing_counts(letters: Sequence[Mapping[str, Any]]) -> dict[int, Counter[str]]:
    """Per absorbing latent, how many absorbed words of each letter it carries."""
    counts: dict[int, Counter[str]] = {}
    for letter in letters:
        for example in letter.get("absorbed", []):
            counts.setdefault(int(example["absorbing_latent"]), Counter())[letter["letter"]] += 1
    return counts


def choose_latents(f_NSF: torch.Tensor, absorbing: Mapping[int, Counter[str]], settings: InspectionSettings) -> list[int]:
    """The most frequent absorbing latents, then a seeded random sample of the latents that fire on the scanned text."""
    by_words = sorted(absorbing, key=lambda latent: (-sum(absorbing[latent].values()), latent))[: settings.absorbing_latents]
    live_F = (f_NSF > 0).flatten(0, 1).any(dim=0)
    live_F[by_words] = False
    live = torch.nonzero(live_F).flatten()
    order = torch.randperm(len(live), generator=torch.Generator().manual_seed(settings.seed))[: settings.latents]
    return by_words + sorted(live[order].tolist())


def top_contexts(f_NSF: torch.Tensor, ids_NS: torch.Tensor, latent: int, decode: Any, settings: InspectionSettings) -> list[Context]:
    """The latent's strongest positions (one per sequence) with `window` tokens before and a third of it after."""
    per_sequence_N, position_N = f_NSF[:, :, latent].max(dim=1)
    contexts = []
    for n in per_sequence_N.argsort(descending=True)[: settings.contexts].tolist():
        if per_sequence_N[n] <= 0:
            break
        peak = int(position_N[n])
        start, stop = max(peak - settings.window, 0), min(peak + settings.window // 3 + 1, ids_NS.shape[1])
        contexts.append(Context([decode(int(i)) for i in ids_NS[n, start:stop]], f_NSF[n, start:stop, latent].tolist(), peak - start))
    return contexts


def latent_cards(cfg: DictConfig, model: LoadedModel, sae: SparseAutoencoder, letters: Sequence[Mapping[str, Any]],
                 settings: InspectionSettings) -> list[LatentCard]:
    """Cards of the chosen latents over `settings.sequences` held-out validation sequences."""
    ids_NS = split_sequences(cfg, model, "validation", settings.sequences * int(cfg.activations.context_length))
    f_NSF = held_out_latents(model, sae, ids_NS, int(cfg.layer), int(cfg.activations.llm_batch_size))
    n_kept = max(int((~special_positions(ids_NS, model.special_ids())).sum()), 1)
    absorbing = absorbing_counts(letters)
    decode = lambda token_id: model.tokenizer.decode([token_id])  # noqa: E731
    return [
        LatentCard(latent, float((f_NSF[:, :, latent] > 0).sum()) / n_kept, top_contexts(f_NSF, ids_NS, latent, decode, settings),
                   dict(sorted(absorbing.get(latent, Counter()).items())))
        for latent in choose_latents(f_NSF, absorbing, settings)
    ]


STYLE = """body{font-family:sans-serif;max-width:70em;margin:1em auto}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}.ctx{font-family:monospace;white-space:pre-wrap;margin:2px 0}
.peak{outline:1px solid #c00}.card{border-top:1px solid #888;margin-top:1em}"""


def _context_html(context: Context) -> str:
    top = max(max(context.activations), 1e-12)
    spans = []
    for index, (token, value) in enumerate(zip(context.tokens, context.activations, strict=True)):
        alpha = max(value, 0.0) / top
        cls = ' class="peak"' if index == context.peak else ""
        spans.append(f'<span{cls} style="background:rgba(255,120,0,{alpha:.2f})" title="{value:.3g}">{html.escape(token)}</span>')
    return f'<div class="ctx">{"".join(spans)}</div><small>peak {context.activations[context.peak]:.3g}</small>'


def _card_html(card: LatentCard) -> str:
    absorbs = ", ".join(f"{html.escape(letter)} ({count})" for letter, count in card.absorbs.items())
    head = f"<h3>latent {card.latent}</h3><p>fires on {card.frequency:.2%} of scanned tokens"
    head += f"; absorbing latent for first letter(s): {absorbs}</p>" if absorbs else "</p>"
    body = "".join(_context_html(c) for c in card.contexts) or "<p>no activation on the scanned text</p>"
    return f'<div class="card" id="latent-{card.latent}">{head}{body}</div>'


def _absorbed_html(letters: Sequence[Mapping[str, Any]] | None, carded: set[int]) -> str:
    """The absorbed words; an absorbing latent links to its card where the page has one (`carded`)."""
    if letters is None:
        return "<p>The absorption eval did not run for this SAE.</p>"
    rows = [(letter, example) for letter in letters for example in letter.get("absorbed", [])]
    if not rows:
        return "<p>No test word was fully absorbed.</p>"
    lines = ["<table><tr><th>word</th><th>letter</th><th>absorbing latent</th><th>share of probe projection</th><th>letter's main latents</th></tr>"]
    for letter, example in rows[:MAX_ABSORBED_ROWS]:
        latent = int(example["absorbing_latent"])
        linked = f'<a href="#latent-{latent}">{latent}</a>' if latent in carded else str(latent)
        lines.append(f"<tr><td>{html.escape(str(example['word']))}</td><td>{html.escape(str(letter['letter']))}</td>"
                     f'<td>{linked}</td><td>{float(example["projection_share"]):.2f}</td>'
                     f"<td>{html.escape(', '.join(str(i) for i in letter.get('main_latents', [])))}</td></tr>")
    more = f"<p>... and {len(rows) - MAX_ABSORBED_ROWS} more (see evals/absorption_per_letter.json).</p>" if len(rows) > MAX_ABSORBED_ROWS else ""
    return "\n".join(lines) + "</table>" + more


def render_page(title: str, facts: Mapping[str, Any], cards: Sequence[LatentCard], letters: Sequence[Mapping[str, Any]] | None) -> str:
    """The whole page; every piece of text from the corpus, tokenizer or config is escaped."""
    fact_rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><table>{fact_rows}</table>"
            "<h2>Absorbed words (absorption eval: the letter's main latents stay silent, another latent carries the letter)</h2>"
            f"{_absorbed_html(letters, {card.latent for card in cards})}<h2>Latents: top-activating held-out contexts</h2>"
            "<p>Absorbing latents first (most absorbed words), then a random sample of latents that fire; the peak token is outlined.</p>"
            f"{''.join(_card_html(card) for card in cards)}</body></html>")


def write_inspection(cfg: DictConfig, model: LoadedModel, sae: SparseAutoencoder, letters: Sequence[Mapping[str, Any]] | None,
                     path: Path, run_key: str) -> Path:
    """Compute the cards of a raw-space SAE and write the page to `path`."""
    settings = InspectionSettings.from_config(cfg)
    cards = latent_cards(cfg, model, sae, letters or [], settings)
    facts = {"run key": run_key, "model": cfg.model.name, "layer": cfg.layer, "architecture": cfg.sae.architecture,
             "d_sae": sae.d_sae, "mask_prob": cfg.mask_prob, "seed": cfg.seed, "data_seed": cfg.data_seed,
             "held-out sequences scanned": f"{settings.sequences} x {cfg.activations.context_length} tokens (validation split)"}
    path.write_text(render_page(f"SAE inspection: {run_key}", facts, cards, letters))
    return path
