"""Is a digit-group string written the way some country's numbering plan writes its numbers?

libphonenumber's metadata holds, per region, the national formats of its numbers: group
lengths (`(\\d{3})(\\d{4})` -> `395 3624`), the leading digits each format applies to, and
the trunk prefix glued in front (`0\\1` -> `0## ### ####`). A number of 6-9 digits in groups
with no phone cue next to it is only a phone when the grouping itself says so: `395 3624`
(Iceland/Estonia), `26 943046` (Cyprus), `66 31 35` (Greenland) are written exactly as their
plans format them and are valid there; order numbers, amounts and ids rarely are.

Checking every region with `phonenumbers` costs ~0.1 s per value (245 regions), so the
formats are indexed once, lazily, by the group lengths they produce; a value is checked only
against the few formats of its own group lengths whose pattern and leading digits match, and
only those are parsed and validated.
"""

from __future__ import annotations

import functools
import re
from itertools import product
from typing import NamedTuple

import phonenumbers
from phonenumbers.phonemetadata import PhoneMetadata

__all__ = ["written_as_plan"]

# one capturing group of a format pattern: `(\d)`, `(\d{3})`, `(\d{3,4})`
_PATTERN_GROUP = re.compile(r"\(\\d(?:\{(\d+)(?:,(\d+))?\})?\)")
_BACKREF = re.compile(r"\\(\d)")
_DIGITS = re.compile(r"\d+")


class _Format(NamedTuple):
    region: str
    trunk: str  # the trunk prefix written in front of the first group ("" when not)
    pattern: str  # the national significant number, whole
    leading: str  # its leading digits (the most specific pattern; "" when any)


def written_as_plan(value: str) -> bool:
    """True when `value` is grouped like a national format of some region and valid there."""
    groups = _DIGITS.findall(value)
    if len(groups) < 2:
        return False
    digits = "".join(groups)
    for f in _index().get(tuple(len(g) for g in groups), ()):
        if f.trunk and not digits.startswith(f.trunk):
            continue
        nsn = digits[len(f.trunk) :]
        if not _re(f.pattern).fullmatch(nsn) or (f.leading and not _re(f.leading).match(nsn)):
            continue
        if _valid_national(nsn, f.region):
            return True
    return False


def _valid_national(nsn: str, region: str) -> bool:
    code = phonenumbers.country_code_for_region(region)
    number = phonenumbers.PhoneNumber(country_code=code, national_number=int(nsn))
    if nsn.startswith("0"):  # Italian-style leading zero kept in the national number
        number.italian_leading_zero = True
        number.number_of_leading_zeros = len(nsn) - len(nsn.lstrip("0"))
    return phonenumbers.is_valid_number_for_region(number, region)


# compiled when first needed, or all at once by `warm` (most of a second)
@functools.cache
def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def warm() -> None:
    """Build the index and compile every pattern now. Left to the first numbers of each shape,
    this costs requests 4-20 ms each until every shape has been seen; the edge agent calls it
    at start-up (through `Masker.warm_up`), off the request path."""
    for formats in _index().values():
        for f in formats:
            _re(f.pattern)
            if f.leading:
                _re(f.leading)


@functools.cache
def _index() -> dict[tuple[int, ...], tuple[_Format, ...]]:
    index: dict[tuple[int, ...], list[_Format]] = {}
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        md = PhoneMetadata.metadata_for_region(region)
        if md is None:
            continue
        formats = md.number_format
        if not formats and md.country_code:  # regions sharing a calling code use its main
            # region's formats (CA: US)
            main = phonenumbers.region_code_for_country_code(md.country_code)
            main_md = PhoneMetadata.metadata_for_region(main)
            formats = main_md.number_format if main_md is not None else []
        trunk = md.national_prefix or ""
        for nf in formats:
            pattern, fmt = nf.pattern or "", nf.format or ""
            spans = [(int(a or 1), int(b or a or 1)) for a, b in _PATTERN_GROUP.findall(pattern)]
            if not spans or _PATTERN_GROUP.sub("", pattern):
                continue  # a pattern with more than plain digit groups: not indexed
            leading = nf.leading_digits_pattern[-1] if nf.leading_digits_pattern else ""
            entry = _Format(region, "", pattern, leading)
            rule = nf.national_prefix_formatting_rule
            # written with the trunk prefix glued to the first group (`0\1`) and without it:
            # both are how people write national numbers
            with_trunk = bool(
                trunk and rule and re.fullmatch(rf"\(?{re.escape(trunk)}\\1\)?", rule)
            )
            for lengths in product(*(range(a, b + 1) for a, b in spans)):
                shape = _written_shape(fmt, lengths)
                index.setdefault(shape, []).append(entry)
                if with_trunk:
                    shape_t = (shape[0] + len(trunk), *shape[1:])
                    index.setdefault(shape_t, []).append(entry._replace(trunk=trunk))
    return {k: tuple(v) for k, v in index.items()}


def _written_shape(fmt: str, lengths: tuple[int, ...]) -> tuple[int, ...]:
    """The digit-group lengths a format (`\\1 \\2-\\3`) writes for these group lengths."""
    written = _BACKREF.sub(lambda m: "0" * lengths[int(m.group(1)) - 1], fmt)
    return tuple(len(g) for g in _DIGITS.findall(written))
