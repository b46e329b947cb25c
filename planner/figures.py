"""Numbers that carry the equation that produced them, so a plan can explain itself."""
from __future__ import annotations

from dataclasses import dataclass

GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True)
class Figure:
    """A named value with its unit and the equation (with the numbers filled in) behind it."""

    name: str
    value: float
    unit: str
    equation: str

    def to_dict(self) -> dict:
        """Plain-data form for JSON/YAML."""
        return {"name": self.name, "value": self.value, "unit": self.unit, "equation": self.equation}


def gib(num_bytes: float) -> str:
    """Bytes as a short GiB string."""
    return f"{num_bytes / GIB:.2f} GiB"


def human_bytes(num_bytes: float) -> str:
    """Bytes in the largest unit that keeps the number readable."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if abs(num_bytes) >= size:
            return f"{num_bytes / size:.2f} {unit}"
    return f"{int(num_bytes)} B"
