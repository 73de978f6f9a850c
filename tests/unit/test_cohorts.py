"""Life-event cohorts: the period a scan on a day covers, and who reaches the age in it.

Periods and birth ranges are half-open: ``period_end`` and ``born_to`` are the first day after.
"""

from __future__ import annotations

from datetime import date

import pytest

from workflows.life_events import cohort_for


def test_a_birthday_scan_covers_the_day_itself() -> None:
    c = cohort_for(18, "birthday", date(2026, 11, 26))
    assert (c.period_start, c.period_end) == (date(2026, 11, 26), date(2026, 11, 27))


def test_a_birthday_scan_finds_those_born_that_day_age_years_before() -> None:
    c = cohort_for(18, "birthday", date(2026, 11, 26))
    assert (c.born_from, c.born_to) == (date(2008, 11, 26), date(2008, 11, 27))


def test_in_a_common_year_a_29_february_birthday_falls_on_28_february() -> None:
    c = cohort_for(3, "birthday", date(2027, 2, 28))
    assert (c.born_from, c.born_to) == (date(2024, 2, 28), date(2024, 3, 1))


def test_in_a_common_year_1_march_does_not_count_29_february_twice() -> None:
    c = cohort_for(3, "birthday", date(2027, 3, 1))
    assert (c.born_from, c.born_to) == (date(2024, 3, 1), date(2024, 3, 2))


def test_on_29_february_those_born_on_a_29_february_reach_their_age() -> None:
    c = cohort_for(4, "birthday", date(2028, 2, 29))
    assert (c.born_from, c.born_to) == (date(2024, 2, 29), date(2024, 3, 1))


def test_on_29_february_no_one_of_an_age_born_in_a_common_year_is_found() -> None:
    c = cohort_for(1, "birthday", date(2028, 2, 29))
    assert c.born_from == c.born_to


def test_an_autumn_school_scan_prepares_the_coming_april() -> None:
    c = cohort_for(6, "school-year-start", date(2026, 10, 1))
    assert (c.period_start, c.period_end) == (date(2027, 4, 1), date(2028, 4, 1))


def test_a_school_scan_in_the_new_year_is_for_that_april() -> None:
    c = cohort_for(6, "school-year-start", date(2027, 1, 15))
    assert c.period_start == date(2027, 4, 1)


def test_school_entrants_are_born_2_april_to_1_april() -> None:
    c = cohort_for(6, "school-year-start", date(2026, 10, 1))
    # 学齢: six on 1 April 2027 (a child born on 1 April turns six the day before)
    assert (c.born_from, c.born_to) == (date(2020, 4, 2), date(2021, 4, 2))


def test_a_fiscal_year_scan_covers_the_fiscal_year_of_the_day() -> None:
    c = cohort_for(20, "fiscal-year-start", date(2026, 4, 1))
    assert (c.period_start, c.period_end) == (date(2026, 4, 1), date(2027, 4, 1))


def test_a_fiscal_year_scan_before_april_belongs_to_the_year_begun_last_april() -> None:
    c = cohort_for(20, "fiscal-year-start", date(2027, 3, 31))
    assert c.period_start == date(2026, 4, 1)


def test_a_fiscal_year_cohort_is_those_reaching_the_age_in_that_year() -> None:
    c = cohort_for(20, "fiscal-year-start", date(2027, 1, 15))
    assert (c.born_from, c.born_to) == (date(2006, 4, 1), date(2007, 4, 1))


def test_the_cohort_carries_its_rule_and_age() -> None:
    c = cohort_for(65, "fiscal-year-start", date(2027, 1, 15))
    assert (c.age, c.on) == (65, "fiscal-year-start")


def test_an_unknown_rule_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'new-moon'"):
        cohort_for(6, "new-moon", date(2026, 10, 1))
