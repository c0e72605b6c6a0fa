"""VAT numbers of hosted folders: validation and normalization with python-stdnum."""

from __future__ import annotations

from stdnum import get_cc_module
from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError

EXAMPLE = "FR40303265045"


class InvalidVat(ValueError):
    pass


def normalize_vat(text: str) -> str:
    """``fr 40 303 265 045`` -> ``FR40303265045``; raises InvalidVat with the expected form."""
    try:
        compact = eu_vat.compact(text)
        cc = compact[:2].lower()
        if cc in eu_vat.MEMBER_STATES or cc in ("el", "xi"):
            return str(eu_vat.validate(compact))
        module = get_cc_module(cc, "vat") if cc.isalpha() else None
        if module is None:
            raise InvalidVat(
                f"{text!r} is not a VAT number: expected a country code followed by the "
                f"number, e.g. {EXAMPLE}")
        return compact[:2].upper() + str(module.validate(compact[2:]))
    except ValidationError as exc:
        raise InvalidVat(
            f"{text!r} is not a valid VAT number ({exc}): expected a country code "
            f"followed by the number, e.g. {EXAMPLE}") from None
