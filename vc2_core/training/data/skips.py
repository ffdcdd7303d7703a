"""Why an item was not used: one :class:`Skipped` record per item, and a :class:`SkipReport` of them.

Datasets and indexes never raise for a bad file or line; they return a Skipped with one of
:data:`REASONS`, and the item stream counts them in a report that travels with checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REASONS = ("missing", "unreadable", "too short", "no caption", "bad index line")
MAX_EXAMPLES = 20  # skipped items a report keeps by name


@dataclass(frozen=True)
class Skipped:
    source: str  # a file, or "index.jsonl:17" for a bad index line
    reason: str  # one of REASONS
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown skip reason {self.reason!r}; expected one of {REASONS}")


@dataclass
class SkipReport:
    """What was skipped and why: counts by reason, the number of items seen, the first examples."""

    seen: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, str]] = field(default_factory=list)  # {"source", "reason", "detail"}

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def add(self, item: object) -> None:
        """Count one item seen (a Sample, a Skipped, or anything a dataset returns); record it if skipped."""
        self.seen += 1
        if isinstance(item, Skipped):
            self.counts[item.reason] = self.counts.get(item.reason, 0) + 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append({"source": item.source, "reason": item.reason, "detail": item.detail})

    def merge(self, other: SkipReport) -> None:
        """Add another report's counts (another process, another stream) to this one."""
        self.seen += other.seen
        for reason, count in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + count
        self.examples.extend(other.examples[:max(0, MAX_EXAMPLES - len(self.examples))])

    def summary(self) -> str:
        """One line of counts, then one line per recorded example."""
        share = 100.0 * self.skipped / self.seen if self.seen else 0.0
        order = [r for r in REASONS if r in self.counts] + sorted(set(self.counts) - set(REASONS))
        reasons = ", ".join(f"{reason} {self.counts[reason]}" for reason in order)
        lines = [f"skipped {self.skipped} of {self.seen} items ({share:.1f}%)" + (f": {reasons}" if reasons else "")]
        lines += [f"  {e['source']}: {e['reason']}" + (f" ({e['detail']})" if e["detail"] else "")
                  for e in self.examples]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"seen": self.seen, "counts": dict(self.counts), "examples": [dict(e) for e in self.examples]}

    @classmethod
    def from_dict(cls, data: dict) -> SkipReport:
        return cls(int(data["seen"]), {str(k): int(v) for k, v in data["counts"].items()},
                   [dict(e) for e in data["examples"]])
