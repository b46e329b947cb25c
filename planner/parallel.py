"""Which tensor/expert-parallel sizes the engines accept for a Qwen3.5 checkpoint."""
from __future__ import annotations

from dataclasses import dataclass

from qwen35.planner.errors import InputError
from qwen35.planner.models.config import TextConfig

FP8_BLOCK = 128  # FP8 checkpoints quantise in 128x128 blocks; a TP shard must hold whole blocks.
TP_SIZES = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class TpChoice:
    """A tensor-parallel size the engine accepts, with the expert-parallel size that goes with it."""

    tp: int
    ep: int
    why_ep: str


def tp_rejection(text: TextConfig, precision: str, tp: int) -> str | None:
    """Why the engines reject this TP size for the model, or None when it is valid."""
    heads = {
        "attention heads": text.num_attention_heads,
        "linear-attention key heads": text.linear_num_key_heads,
        "linear-attention value heads": text.linear_num_value_heads,
    }
    for what, count in heads.items():
        if count % tp:
            return f"tp {tp} does not divide the {count} {what}"
    if precision == "fp8":
        widths = {}
        if not text.is_moe and text.intermediate_size:
            widths["FFN"] = text.intermediate_size
        if text.is_moe and text.shared_expert_intermediate_size:
            widths["shared-expert FFN"] = text.shared_expert_intermediate_size
        for what, width in widths.items():
            if width % tp or (width // tp) % FP8_BLOCK:
                return (f"tp {tp} splits the {width}-wide {what} into {width // tp}-wide shards, "
                        f"not whole {FP8_BLOCK}-column FP8 blocks")
    return None


def expert_parallel(text: TextConfig, precision: str, tp: int) -> tuple[int, str]:
    """Expert-parallel size for a TP group: whole experts per GPU when TP slices them too thin."""
    if not text.is_moe or tp == 1:
        return 1, ""
    slice_width = text.moe_intermediate_size // tp
    if text.num_experts % tp:
        return 1, ""
    if precision == "fp8" and (text.moe_intermediate_size % tp or slice_width % FP8_BLOCK):
        return tp, (f"ep {tp}: tp {tp} would cut each {text.moe_intermediate_size}-wide expert into "
                    f"{slice_width}-wide shards, not whole {FP8_BLOCK}-column FP8 blocks")
    if slice_width < FP8_BLOCK:
        return tp, (f"ep {tp}: tp {tp} would cut each {text.moe_intermediate_size}-wide expert into "
                    f"{slice_width}-column slivers; whole experts per GPU ({text.num_experts // tp} each) "
                    "keep the expert GEMMs efficient")
    return 1, ""


def tp_choices(text: TextConfig, precision: str, max_gpus: int, gpus_per_node: int,
               across_nodes: str | None = None) -> tuple[list[TpChoice], list[tuple[int, str]]]:
    """Valid TP sizes up to max_gpus (multi-node sizes must fill whole nodes), and (tp, why) for the others.

    `across_nodes` is None when a TP group may span nodes, else why it may not (the link between GPUs).
    """
    choices: list[TpChoice] = []
    skipped: list[tuple[int, str]] = []
    for tp in TP_SIZES:
        if tp > max_gpus:
            break
        if tp > gpus_per_node and across_nodes:
            skipped.append((tp, f"tp {tp} would span nodes: {across_nodes}"))
            continue
        if tp > gpus_per_node and tp % gpus_per_node:
            skipped.append((tp, f"tp {tp} does not fill whole nodes of {gpus_per_node} GPUs"))
            continue
        rejection = tp_rejection(text, precision, tp)
        if rejection:
            skipped.append((tp, rejection))
            continue
        ep, why = expert_parallel(text, precision, tp)
        choices.append(TpChoice(tp, ep, why))
    return choices, skipped


def forced_choices(text: TextConfig, precision: str, choices: list[TpChoice], skipped: list[tuple[int, str]],
                   tp: int | None, ep: int | None, max_gpus: int) -> list[TpChoice]:
    """The candidates left by --tp / --ep, or an InputError saying why the size asked for cannot run."""
    if tp is not None:
        if tp < 1:
            raise InputError(f"--tp must be at least 1, got {tp}", "omit it to let the planner choose")
        if tp > max_gpus:
            raise InputError(f"--tp {tp} needs {tp} GPUs, more than the {max_gpus} the plan may use",
                             "add GPUs with --gpu NAME:N or --nodes N")
        why = dict(skipped).get(tp) or (None if tp in TP_SIZES else f"tp {tp} is not a power of two the engines shard by")
        why = why or tp_rejection(text, precision, tp)
        if why:
            raise InputError(f"--tp {tp} refused: {why}", f"try --tp {choices[0].tp}" if choices else "omit --tp")
        choices = [choice for choice in choices if choice.tp == tp]
    if ep is None:
        return choices
    forced = []
    for choice in choices:
        if ep == choice.ep:
            forced.append(choice)
            continue
        if ep > 1 and not text.is_moe:
            raise InputError(f"--ep {ep} refused: a dense model has no experts to spread", "omit --ep")
        if ep not in (1, choice.tp):
            raise InputError(f"--ep {ep} refused: expert parallelism here runs over the whole TP group (ep 1 or "
                             f"ep {choice.tp} at tp {choice.tp})", f"try --ep {choice.tp} or --ep 1")
        if ep > 1 and text.num_experts % ep:
            raise InputError(f"--ep {ep} refused: it does not divide the {text.num_experts} experts", "try --ep 1")
        if ep == 1 and choice.ep > 1 and precision == "fp8":
            raise InputError(f"--ep 1 refused at tp {choice.tp}: {choice.why_ep.split(': ', 1)[1]}",
                             f"try --ep {choice.tp}, or a smaller --tp")
        forced.append(TpChoice(choice.tp, ep, f"ep {ep}: as asked (--ep {ep})"))
    return forced
