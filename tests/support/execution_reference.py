"""A plain bar-by-bar loop of docs/execution.md's rules, in cash and units, with Python floats: the
independent reference the vectorised engine (`backtest.simulation.fills`) is tested against.

It follows the rules as written, one bar at a time: at the open (a) close a position whose side
differs from d_t, (b) a short pays hour t's interest, (c) open at the start of a run; then the
bar's stop or take-profit; then the mark at the close. Nothing here is shared with the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Ref:
    equity: list[float] = field(default_factory=list)
    position: list[int] = field(default_factory=list)
    trades: list[tuple] = field(default_factory=list)  # (entry bar, exit bar | None, side, return | None, kind | None)

    def exits(self) -> dict[str, int]:
        kinds = [trade[4] for trade in self.trades if trade[4] is not None]
        return {kind: kinds.count(kind) for kind in ("signal", "stop", "take_profit", "ruin")}


def desired_of(targets: list[int], direction: str = "long") -> list[int]:
    """d_t = target_{t-1} kept to the direction's side(s), d_0 = 0."""
    keep = {"long": lambda x: max(x, 0), "short": lambda x: min(x, 0), "long_short": lambda x: x}[direction]
    return [0] + [keep(int(x)) for x in targets[:-1]]


def reference(
    open_,
    high,
    low,
    close,
    desired,
    fee,
    sl=None,
    tp=None,
    trail=None,
    size=1.0,
    slippage_bps=0.0,
    borrow_bps_per_day=0.0,
) -> Ref:
    o, h, lo, c = (list(map(float, x)) for x in (open_, high, low, close))
    d = [int(x) for x in desired]
    f, k, s, r = fee, slippage_bps / 10_000, size, borrow_bps_per_day / 10_000 / 24
    out = Ref()
    cash, units, debt, side = 1.0, 0.0, 0.0, 0
    entry_bar = ref_price = allocation = extreme = None
    ruined = False

    def clamp(price: float, t: int) -> float:
        return min(max(price, lo[t]), h[t])

    def close_trade(t: int, price: float, kind: str) -> None:
        nonlocal cash, units, debt, side
        if side > 0:
            cash += units * price * (1 - f)
            ret = units * price * (1 - f) / allocation - 1
        else:
            cash -= debt * price / (1 - f)
            ret = (allocation * (1 - f) - debt * price / (1 - f)) / allocation
        out.trades.append((entry_bar, t, side, ret, kind))
        units, debt, side = 0.0, 0.0, 0

    def ruin(t: int, held: int) -> None:
        nonlocal ruined
        entry, _, trade_side, _, _ = out.trades[-1]
        out.trades[-1] = (entry, t, trade_side, -1 / s, "ruin")
        out.equity.append(0.0)
        out.position.append(held)
        ruined = True

    for t in range(len(o)):
        if ruined:
            out.equity.append(0.0)
            out.position.append(0)
            continue
        before = d[t - 1] if t else 0
        # (a) a position whose side differs from d_t is closed at the open
        if side != 0 and side != d[t]:
            close_trade(t, clamp(o[t] * (1 - k) if side > 0 else o[t] * (1 + k), t), "signal")
            if cash <= 0:
                ruin(t, 0)
                continue
        # (b) a short still held pays hour t's interest
        if side < 0:
            debt *= 1 + r
        # (c) a trade opens at the start of a run
        if d[t] != 0 and d[t] != before:
            equity, side, entry_bar, ref_price = cash, d[t], t, o[t]
            allocation = s * equity
            if side > 0:
                price = clamp(o[t] * (1 + k), t)
                units, cash = allocation * (1 - f) / price, equity - allocation
            else:
                price = clamp(o[t] * (1 - k), t)
                units = allocation / price
                cash, debt = equity + units * price * (1 - f), units * (1 + r)
            extreme = ref_price
        held = side
        # the bar's stop or take-profit (the stop first)
        if side > 0:
            levels = ([ref_price * (1 - sl)] if sl is not None else []) + (
                [(1 - trail) * extreme] if trail is not None else []
            )
            level = max(levels) if levels else None
            if level is not None and lo[t] <= level:
                close_trade(t, clamp(min(o[t], level) * (1 - k), t), "stop")
            elif tp is not None and h[t] > ref_price * (1 + tp):
                close_trade(t, clamp(ref_price * (1 + tp), t), "take_profit")
        elif side < 0:
            levels = ([ref_price * (1 + sl)] if sl is not None else []) + (
                [(1 + trail) * extreme] if trail is not None else []
            )
            level = min(levels) if levels else None
            if level is not None and h[t] >= level:
                close_trade(t, clamp(max(o[t], level) * (1 + k), t), "stop")
            elif tp is not None and lo[t] < ref_price * (1 - tp):
                close_trade(t, clamp(ref_price * (1 - tp), t), "take_profit")
        if held != 0 and side == 0 and cash <= 0:  # ruined by the stop's fill
            ruin(t, held)
            continue
        # the mark at the close
        equity = cash + units * c[t] if side > 0 else cash - debt * c[t] if side < 0 else cash
        if side != 0 and equity <= 0:
            out.trades.append((entry_bar, None, side, None, None))  # closed as ruin below
            ruin(t, held)
            continue
        if side > 0:
            extreme = max(extreme, h[t])  # raises the trailing level from the next bar on
        elif side < 0:
            extreme = min(extreme, lo[t])
        out.equity.append(equity)
        out.position.append(held)
    if side != 0 and not ruined:
        out.trades.append((entry_bar, None, side, None, None))  # still open at the window's end
    return out
