"""Deterministic synthetic residents for the sample agencies.

The same seed and size always give the same people, households, incomes, medical payments and
pensions, so the demo and the tests can pick cases (a cohabiting couple, a single parent) by
looking, and every run sees the same data.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from dataclasses import dataclass, field

REFERENCE_DATE = dt.date(2026, 4, 1)
FISCAL_YEAR = 2025
MUNICIPALITIES = ("city-minato", "city-shibuya")


@dataclass
class Person:
    subject_id: uuid.UUID
    municipality: str
    household_id: str
    relationship: str
    birth_date: dt.date
    moved_in: dt.date
    taxable_income: int
    insured_by_kyokai: bool
    medical_payments: list[tuple[str, int, str]] = field(default_factory=list)
    pension: tuple[str, int] | None = None

    def age(self, on: dt.date = REFERENCE_DATE) -> int:
        b = self.birth_date
        return on.year - b.year - ((on.month, on.day) < (b.month, b.day))


@dataclass
class Household:
    id: str
    municipality: str
    members: list[Person]
    kind: str


def _birth(rng: random.Random, age: int) -> dt.date:
    start = dt.date(REFERENCE_DATE.year - age - 1, REFERENCE_DATE.month, REFERENCE_DATE.day)
    return start + dt.timedelta(days=rng.randrange(1, 365))


def generate(size: int, seed: int = 20261126) -> list[Household]:
    """About ``size`` residents in households of one to five."""
    rng = random.Random(seed)
    households: list[Household] = []
    count = 0
    n = 0
    while count < size:
        n += 1
        municipality = MUNICIPALITIES[0] if rng.random() < 0.6 else MUNICIPALITIES[1]
        hid = f"H{n:06d}"
        kind = rng.choices(["single", "couple", "family", "single-parent"], [3, 2, 4, 2])[0]
        members: list[Person] = []

        # Called only within this iteration, so binding the loop's variables late is safe.
        def person(rel: str, age: int, income: int) -> Person:
            p = Person(
                subject_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                municipality=municipality,  # noqa: B023
                household_id=hid,  # noqa: B023
                relationship=rel,
                birth_date=_birth(rng, age),
                moved_in=REFERENCE_DATE - dt.timedelta(days=rng.randrange(30, 6000)),
                taxable_income=income,
                insured_by_kyokai=age >= 18 and rng.random() < 0.55,
            )
            members.append(p)  # noqa: B023
            return p

        head_age = rng.randrange(20, 90)
        person("世帯主", head_age, _income(rng, head_age))
        if kind in ("couple", "family"):
            age = max(20, head_age + rng.randrange(-5, 6))
            person(
                "妻" if rng.random() < 0.8 else "夫",
                age,
                _income(rng, age) // rng.choice([1, 2, 4]),
            )
        if kind in ("family", "single-parent"):
            for _ in range(rng.randrange(1, 4)):
                person("子", rng.randrange(0, 18), 0)
        for p in members:
            if p.insured_by_kyokai and rng.random() < 0.4:
                for _ in range(rng.randrange(1, 6)):
                    month = f"{FISCAL_YEAR}-{rng.randrange(1, 13):02d}"
                    p.medical_payments.append(
                        (month, rng.randrange(2_000, 400_000), rng.choice(["入院", "外来", "調剤"]))
                    )
            a = p.age()
            if a >= 65:
                p.pension = ("老齢基礎年金", rng.randrange(600_000, 2_400_000))
            elif a >= 20 and rng.random() < 0.03:
                p.pension = ("障害基礎年金", rng.randrange(780_000, 1_000_000))
        households.append(Household(hid, municipality, members, kind))
        count += len(members)
    return households


def _income(rng: random.Random, age: int) -> int:
    if age >= 70:
        return rng.randrange(0, 2_000_000)
    return int(rng.lognormvariate(15.0, 0.6)) // 1000 * 1000


def people(households: list[Household]) -> list[Person]:
    return [p for h in households for p in h.members]
