"""Ratios against the baseline, and the bench result as a fixed-width text report."""
from __future__ import annotations


def _by(rows: list[dict] | None, key: str) -> dict:
    return {row[key]: row for row in rows or []}


def ratios(result: dict) -> dict:
    """ours vs transformers: prefill speedup (their ms / our ms) and decode speedup (our tok/s / theirs)."""
    base = result.get("baseline") or {}
    ours = result["ours"]
    out = {"prefill_speedup": {}, "decode_speedup": {}}
    theirs_prefill, theirs_decode = _by(base.get("prefill"), "tokens"), _by(base.get("decode"), "batch")
    for row in ours["prefill"]:
        other = theirs_prefill.get(row["tokens"])
        out["prefill_speedup"][str(row["tokens"])] = other["ms"] / row["ms"] if other else None
    for row in ours["decode"]:
        other = theirs_decode.get(row["batch"])
        out["decode_speedup"][str(row["batch"])] = row["tokens_per_s"] / other["tokens_per_s"] if other else None
    peak, base_peak = ours.get("peak_memory_bytes"), base.get("peak_memory_bytes")
    out["peak_memory_ratio"] = peak / base_peak if peak and base_peak else None
    speculative = result.get("speculative") or {}
    plain = _by(ours["decode"], "batch").get(1, {}).get("tokens_per_s")
    out["speculative_speedup"] = {  # MTP tokens/s over plain batch-1 decode
        label: speculative[label]["tokens_per_s"] / plain if plain else None
        for label in ("as_is", "guessing_head") if label in speculative}
    return out


def _num(value, spec: str) -> str:
    """value formatted by spec; a missing value as '-' in the same width."""
    return format("-", spec.split(".")[0]) if value is None else format(value, spec)


def _ratio(value) -> str:
    return f"{'-':>7}" if value is None else f"{value:>6.2f}x"


def _gib(value) -> str:
    return "-" if value is None else f"{value / 2**30:.2f} GiB"


def render(result: dict) -> str:
    """The machine, the workload and the figures, one table, ratios in the last column."""
    m, w, ours = result["machine"], result["workload"], result["ours"]
    base = result.get("baseline") or {}
    rat = result.get("ratios") or {}
    device = m.get("gpu") or f"CPU ({m['cpu']}, {m['cpu_threads']} threads)"
    lines = [
        f"machine:  {device}  driver {m.get('driver') or '-'}  torch {m['torch']}  cuda {m.get('cuda') or '-'}  "
        f"triton {m.get('triton') or '-'}",
        f"copy bandwidth (read + write): {result['copy_gbs']:.0f} GB/s",
        f"model:    {result['model']['path']}  ({result['model']['dtype']}, {result['model']['params'] / 1e9:.2f}B "
        f"params, {result['model']['text_weight_bytes'] / 2**30:.2f} GiB text weights)",
        f"ours:     engine, {ours['kernels']} kernels, CUDA graphs {'on' if ours['cuda_graphs'] else 'off'}, "
        f"page {result['sizing']['page_size']}, {result['sizing']['state_slots']} state slots, "
        f"{result['sizing']['kv_tokens']} KV tokens ({_gib(result['sizing']['allocated_bytes'])} pools, "
        f"{result['sizing']['allocated_over_planned']:.3f} of plan)",
        f"baseline: {base.get('implementation', 'skipped')}"
        + (f"  transformers {base['transformers']}" if base.get("transformers") else "")
        + (f"  ERROR {base['error']}" if base.get("error") else ""),
        f"workload: prefill {', '.join(map(str, w['prefill_lengths']))} tokens (chunk {w['prefill_chunk']}); decode "
        f"batch {', '.join(map(str, w['decode_batches']))} after {w['prompt_len']}-token prompts, "
        f"{w['decode_steps']} steps, greedy",
        "",
        f"{'figure':<26} {'ours':>12} {'transformers':>13} {'ratio':>7}   {'GB/s':>7} {'of copy':>8}",
    ]
    theirs_prefill, theirs_decode = _by(base.get("prefill"), "tokens"), _by(base.get("decode"), "batch")
    for row in ours["prefill"]:
        other = theirs_prefill.get(row["tokens"], {})
        speedup = rat["prefill_speedup"].get(str(row["tokens"]))
        lines.append(f"{'prefill ' + str(row['tokens']) + ' tok (ms)':<26} {row['ms']:>12.2f} "
                     f"{_num(other.get('ms'), '>13.2f')} {_ratio(speedup)}")
    for row in ours["decode"]:
        other = theirs_decode.get(row["batch"], {})
        lines.append(f"{'decode b=' + str(row['batch']) + ' (tok/s)':<26} {row['tokens_per_s']:>12.1f} "
                     f"{_num(other.get('tokens_per_s'), '>13.1f')} "
                     f"{_ratio(rat['decode_speedup'].get(str(row['batch'])))}   {row['gbs']:>7.0f} "
                     f"{_num(row['copy_share'], '>8.1%')}")
    lines.append(f"{'peak memory':<26} {_gib(ours.get('peak_memory_bytes')):>12} "
                 f"{_gib(base.get('peak_memory_bytes')):>13}   (ours: {_gib(ours.get('peak_excluding_pools_bytes'))} "
                 f"without the pools)")
    speculative = result.get("speculative")
    if speculative:
        lines.append("")
        if "skipped" in speculative:
            lines.append(f"MTP speculation: skipped: {speculative['skipped']}")
        else:
            for key, label in (("as_is", "head as is"), ("guessing_head", "guessing head")):
                row, speedup = speculative[key], rat["speculative_speedup"].get(key)
                lines.append(f"MTP k={row['speculative_tokens']} b=1, {label:<13} {row['tokens_per_s']:>10.1f} tok/s "
                             f"{_ratio(speedup)} of plain decode  acceptance {_num(row['acceptance'], '.2f')}  "
                             f"{row['step_ms']:.2f} ms/step")
    server = result.get("server")
    if server:
        lines.append("")
        if "skipped" in server:
            lines.append(f"server load: skipped: {server['skipped']}")
        else:
            t, i = server["ttft_ms"], server["itl_ms"]
            lines.append(f"server load: {server['requests']} requests, Poisson {server['rate_per_s']:g}/s, "
                         f"{server['prompt_tokens']}-token prompts, {server['max_tokens']} tokens each, "
                         f"{_num(server['output_tokens_per_s'], '.1f')} output tok/s")
            for label, values, spec in (("TTFT ms", t, ".1f"), ("ITL ms ", i, ".2f")):
                lines.append(f"  {label}  p50 {_num(values['p50'], spec)}  p90 {_num(values['p90'], spec)}  "
                             f"p99 {_num(values['p99'], spec)}")
    return "\n".join(lines)
