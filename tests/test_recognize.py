"""Field recognition from invoice text (daemon.recognize): parsing, labels, distractors,
validation-gated confidence, supplier memory, and accuracy on generated invoices."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from io import BytesIO

import pytest

from daemon.recognize import CONFIDENT, FIELDS, SupplierMemory, read_pdf_text, recognize
from daemon.recognize.amounts import find_amounts
from daemon.recognize.dates import find_dates, terms_due
from daemon.recognize.text import fold, normalize
from tests.invoicegen import generate, same_value

TODAY = date(2026, 11, 29)
SELLER_VAT = "FR40303265045"  # SIREN 303265045
BUYER_VAT = "FR23334175221"
IBAN = "FR7630006000011234567890189"
OTHER_IBAN = "FR7630004000031234567890143"


def invoice(*, head: str = "", meta: str = "", totals: str = "", foot: str = "",
            buyer: str = "") -> str:
    """A small French invoice in layout text; each part can be replaced."""
    head = head or ("Atelier Dupont SARL\n12 rue des Lilas\n69003 Lyon\n"
                    "Tél. 04 72 00 00 00")
    buyer = buyer or ("                                        Facturé à :\n"
                      "                                        Société Cliente SAS\n"
                      "                                        8 avenue Foch\n"
                      "                                        75008 Paris\n"
                      f"                                        N° TVA : {BUYER_VAT}")
    meta = meta or ("Facture n° : FA-2026-0042\nDate de facture : 12/11/2026\n"
                    "Échéance : 12/12/2026\nCommande n° : 77812\nN° client : C0042")
    totals = totals or ("Désignation              Qté     Prix unitaire HT      Montant HT\n"
                        "Maintenance préventive     2           500,00 €        1 000,00 €\n"
                        "Déplacement                1           250,00 €          250,00 €\n"
                        "                               Total HT               1 250,00 €\n"
                        "                               TVA 20 %                 250,00 €\n"
                        "                               Total TTC              1 500,00 €")
    foot = foot or (f"IBAN : FR76 3000 6000 0112 3456 7890 189 - BIC : AGRIFRPP\n"
                    "Atelier Dupont SARL au capital de 10 000 € - RCS Lyon 303 265 045 - "
                    f"SIRET 303 265 045 00011 - N° TVA intracommunautaire : {SELLER_VAT}")
    return "\n".join((head, buyer, "", "FACTURE", meta, "", totals, "", foot))


def read(text: str, **kw: object) -> tuple[dict[str, object], dict[str, float], tuple[str, ...]]:
    rec = recognize(text, today=TODAY, **kw)  # type: ignore[arg-type]
    return rec.fields, rec.confidence, rec.problems


# --------------------------------------------------------------------------- amounts, dates

@pytest.mark.parametrize(("text", "value"), [
    ("1 234,56 €", "1234.56"), ("1\u00a0234,56\u00a0€", "1234.56"),
    ("1\u202f234,56\u202f€", "1234.56"), ("1.234,56 EUR", "1234.56"), ("€1,234.56", "1234.56"),
    ("1,234.56", "1234.56"), ("1234.56", "1234.56"), ("-12,00", "-12.00"),
    ("(12.00)", "-12.00"), ("12,00-", "-12.00"), ("EUR 1.234.567,89", "1234567.89"),
    ("£ 99.90", "99.90"), ("10 000 €", "10000"),
])
def test_amount_formats(text: str, value: str) -> None:
    found = find_amounts(normalize(f"Total {text} "))
    assert [a.value for a in found] == [Decimal(value)]


def test_amount_is_not_read_inside_dates_ids_and_phone_numbers() -> None:
    line = normalize("29.11.2026 FR40303265045 INV/2023/03/0008 Tél. 01 23 45 67 89 20 %")
    assert all(a.decimals == 0 for a in find_amounts(line))
    assert not [a for a in find_amounts(line) if a.value in (Decimal("29.11"), 2026, 20)]


@pytest.mark.parametrize("text", [
    "29/11/2026", "29.11.2026", "2026-11-29", "29 novembre 2026", "29 nov. 2026",
    "Nov 29, 2026", "29 November 2026", "29 november 2026", "29 Nov 2026", "29/11/26",
])
def test_date_formats(text: str) -> None:
    tokens = find_dates(fold(text))
    assert len(tokens) == 1
    assert tokens[0].readings[0] == date(2026, 11, 29)


def test_ambiguous_numeric_date_follows_the_document() -> None:
    text = invoice(meta="Invoice No. 7781\nInvoice date: 03/04/2026\nDue date: 03/20/2026")
    fields, _, _ = read(text)
    assert fields["issue_date"] == "2026-03-04"  # month/day: 03/20 says so
    fields, _, _ = read(invoice(meta="Facture n° 12\nDate : 03/04/2026"))
    assert fields["issue_date"] == "2026-04-03"


@pytest.mark.parametrize(("terms", "due"), [
    ("30 jours fin de mois", "2026-12-31"), ("Paiement à réception", "2026-11-12"),
    ("Net 30", "2026-12-12"), ("45 jours fin de mois", "2026-12-31"),
    ("paiement à 30 jours", "2026-12-12"), ("Payment within 14 days", "2026-11-26"),
    ("Betaling binnen 30 dagen", "2026-12-12"), ("Due on receipt", "2026-11-12"),
])
def test_due_date_from_terms(terms: str, due: str) -> None:
    got = terms_due(fold(terms), date(2026, 11, 12))
    assert got is not None and got[0] == date.fromisoformat(due)
    text = invoice(meta=f"Facture n° : 88\nDate de facture : 12/11/2026\n"
                        f"Conditions de paiement : {terms}")
    fields, conf, _ = read(text)
    assert fields["due_date"] == due
    assert conf["due_date"] <= 0.9


def test_printed_due_date_wins_over_terms() -> None:
    text = invoice(meta="Facture n° : 88\nDate : 12/11/2026\nÉchéance : 20/12/2026\n"
                        "Conditions de paiement : 30 jours fin de mois")
    fields, _, _ = read(text)
    assert fields["due_date"] == "2026-12-20"


# --------------------------------------------------------------------------- labels

@pytest.mark.parametrize("label", [
    "Facture n°", "Facture N° :", "N° de facture", "Numéro de facture", "Invoice No.",
    "Invoice number", "Invoice #", "Factuurnummer", "Factuurnr.", "Factuur nr.",
])
def test_number_label_variants(label: str) -> None:
    fields, conf, _ = read(invoice(meta=f"{label} F2026-117\nDate : 12/11/2026"))
    assert fields["number"] == "F2026-117"
    assert conf["number"] >= CONFIDENT


@pytest.mark.parametrize(("issue", "due"), [
    ("Date de facture", "Échéance"), ("Date", "Date d'échéance"), ("Invoice date", "Due date"),
    ("Factuurdatum", "Vervaldatum"), ("Date of issue", "Payment due"),
])
def test_date_label_variants(issue: str, due: str) -> None:
    fields, conf, _ = read(invoice(meta=f"Facture n° 2026-12\n{issue} : 12/11/2026\n"
                                        f"{due} : 12/12/2026"))
    assert (fields["issue_date"], fields["due_date"]) == ("2026-11-12", "2026-12-12")
    assert conf["issue_date"] >= CONFIDENT


@pytest.mark.parametrize(("net", "tax", "gross"), [
    ("Total HT", "Total TVA", "Total TTC"), ("Montant HT", "TVA 20 %", "Net à payer"),
    ("Subtotal", "VAT", "Total due"), ("Totaal excl. BTW", "BTW", "Totaal incl. BTW"),
    ("Total hors taxes", "Montant TVA", "Montant TTC"), ("Subtotaal", "BTW 21%", "Totaal"),
])
def test_total_label_variants(net: str, tax: str, gross: str) -> None:
    totals = (f"{net:30} 1 000,00 €\n{tax:30}   200,00 €\n{gross:30} 1 200,00 €")
    fields, conf, problems = read(invoice(totals=totals))
    assert (fields["total_net"], fields["total_tax"], fields["total_gross"]) == (
        Decimal("1000.00"), Decimal("200.00"), Decimal("1200.00"))
    assert conf["total_gross"] >= CONFIDENT
    assert not problems


def test_totals_as_a_table_header_over_values() -> None:
    totals = ("      Total HT          TVA        Total TTC\n"
              "      1 250,00 €     250,00 €     1 500,00 €")
    fields, conf, _ = read(invoice(totals=totals))
    assert fields["total_gross"] == Decimal("1500.00")
    assert conf["total_net"] >= CONFIDENT


def test_labels_and_values_in_separate_blocks_reconcile_by_arithmetic() -> None:
    totals = "Subtotal\nTax 15%\nTotal\n$ 262.90\n$ 16.94\n$ 279.84"
    fields, _, _ = read(invoice(totals=totals))
    assert fields["total_gross"] == Decimal("279.84")
    assert fields["total_tax"] == Decimal("16.94")


# --------------------------------------------------------------------------- distractors

@pytest.mark.parametrize("distractor", [
    "Commande n° 55123", "Bon de commande : BC-2026-881", "PO 4500012345", "Order no. 99172",
    "Bestelnummer 88123", "N° client : 10042", "Customer ID 551023", "Klantnummer 44120",
])
def test_order_and_customer_numbers_are_not_the_invoice_number(distractor: str) -> None:
    meta = f"{distractor}\nFacture n° : FA-2026-0042\n{distractor}\nDate : 12/11/2026"
    fields, _, _ = read(invoice(meta=meta))
    assert fields["number"] == "FA-2026-0042"


def test_no_number_rather_than_a_distractor() -> None:
    fields, _, problems = read(invoice(meta="Commande n° 55123\nN° client : C0042\n"
                                            "Date : 12/11/2026"))
    assert "number" not in fields
    assert "no-number-found" in problems


def test_capital_siret_rcs_phone_quantities_are_not_totals() -> None:
    text = invoice(totals=("Désignation        Qté    Prix unitaire     Montant\n"
                           "Formation         12          1 250,00 €    15 000,00 €\n"
                           "Total HT                                   15 000,00 €\n"
                           "TVA 20 %                                    3 000,00 €\n"
                           "Total TTC                                  18 000,00 €"),
                   foot=("SAS au capital de 18 000,00 € - RCS Lyon B 303 265 045 - "
                         f"SIRET 303 265 045 00011 - Tél. 04 72 18 00 00 - TVA {SELLER_VAT}"))
    fields, conf, _ = read(text)
    assert fields["total_gross"] == Decimal("18000.00")
    assert fields["total_net"] == Decimal("15000.00")
    assert conf["total_gross"] >= CONFIDENT


# --------------------------------------------------------------------------- deposits, VAT

@pytest.mark.parametrize(("deposit", "due"), [
    ("Acompte versé", "Net à payer"), ("Déjà payé", "Reste à payer"),
    ("Deposit paid", "Amount due"), ("Reeds betaald", "Te betalen"),
])
def test_amount_due_after_deposit(deposit: str, due: str) -> None:
    totals = (f"{'Total HT':24} 1 000,00 €\n{'TVA 20 %':24}   200,00 €\n"
              f"{'Total TTC':24} 1 200,00 €\n{deposit:24}  -300,00 €\n{due:24}   900,00 €")
    fields, conf, problems = read(invoice(totals=totals))
    assert fields["amount_due"] == Decimal("900.00")
    assert fields["total_gross"] == Decimal("1200.00")
    assert conf["amount_due"] >= CONFIDENT and not problems


def test_amount_due_that_deposits_do_not_explain_is_a_problem() -> None:
    totals = ("Total HT   1 000,00 €\nTVA 20 %     200,00 €\nTotal TTC  1 200,00 €\n"
              "Net à payer  700,00 €")
    _fields, conf, problems = read(invoice(totals=totals))
    assert "amount-due-does-not-reconcile" in problems
    assert conf["amount_due"] < CONFIDENT


def test_vat_breakdown_per_rate() -> None:
    totals = ("Taux TVA     Base HT       Montant TVA\n"
              "20,00 %      1 000,00 €       200,00 €\n"
              "5,5 %          400,00 €        22,00 €\n"
              "                Total HT     1 400,00 €\n"
              "                Total TVA      222,00 €\n"
              "                Total TTC    1 622,00 €")
    fields, conf, _ = read(invoice(totals=totals))
    assert fields["vat_breakdown"] == [{"rate": "20", "base": "1000.00", "tax": "200.00"},
                                       {"rate": "5.5", "base": "400.00", "tax": "22.00"}]
    assert conf["vat_breakdown"] >= CONFIDENT


def test_totals_that_do_not_reconcile_get_low_confidence_and_a_problem() -> None:
    totals = "Total HT   1 000,00 €\nTVA 20 %     200,00 €\nTotal TTC  1 250,00 €"
    _fields, conf, problems = read(invoice(totals=totals))
    assert "totals-do-not-reconcile" in problems
    assert conf["total_gross"] < CONFIDENT and conf["total_net"] < CONFIDENT


def test_no_total_found() -> None:
    _, _, problems = read(invoice(totals="Merci de votre confiance."))
    assert "no-total-found" in problems


# --------------------------------------------------------------------------- parties

def test_seller_and_buyer_are_separated() -> None:
    fields, conf, _ = read(invoice())
    assert fields["seller_vat"] == SELLER_VAT and fields["buyer_vat"] == BUYER_VAT
    assert fields["seller_siren"] == "303265045"
    assert fields["seller_iban"] == IBAN and fields["seller_bic"] == "AGRIFRPP"
    assert same_value("seller_name", "Atelier Dupont SARL", fields["seller_name"])
    assert same_value("buyer_name", "Société Cliente SAS", fields["buyer_name"])
    assert conf["seller_vat"] >= CONFIDENT and conf["seller_iban"] >= CONFIDENT


def test_own_vat_is_never_the_sellers() -> None:
    plain = invoice(buyer=f"Client : Société Cliente SAS\nTVA {BUYER_VAT}")
    fields, _, _ = read(plain.replace(f"Client : Société Cliente SAS\nTVA {BUYER_VAT}",
                                      f"Société Cliente SAS {BUYER_VAT}"), own_vat=BUYER_VAT)
    assert fields["seller_vat"] == SELLER_VAT and fields["buyer_vat"] == BUYER_VAT


def test_confidence_needs_validation() -> None:
    bad_vat = invoice().replace(SELLER_VAT, "FR41303265045")  # wrong check digits
    fields, conf, _ = read(bad_vat)
    assert fields.get("seller_vat") != "FR41303265045"
    fields, conf, _ = read(invoice())
    assert conf["seller_name"] < CONFIDENT and conf["buyer_name"] < CONFIDENT
    for name in FIELDS:
        assert 0.0 <= conf.get(name, 0.0) <= 1.0


def test_supplier_memory_confirms_and_iban_change_is_flagged() -> None:
    memory = SupplierMemory(vat=SELLER_VAT, siren="303265045", name="Atelier Dupont",
                            iban=IBAN, number_pattern=r"FA-\d{4}-\d{4}")
    fields, conf, problems = read(invoice(), memory=memory)
    assert fields["seller_name"] == "Atelier Dupont" and conf["seller_name"] >= CONFIDENT
    assert conf["seller_iban"] >= 0.99 and conf["number"] >= 0.95
    assert "iban-changed" not in problems
    changed = invoice().replace("FR76 3000 6000 0112 3456 7890 189",
                                "FR76 3000 4000 0312 3456 7890 143")
    fields, conf, problems = read(changed, memory=memory)
    assert "iban-changed" in problems
    assert fields["seller_iban"] == OTHER_IBAN  # shown as printed, never replaced
    assert conf["seller_iban"] < CONFIDENT


def test_read_pdf_text_keeps_layout_and_accents() -> None:
    from reportlab.pdfgen.canvas import Canvas

    buf = BytesIO()
    canvas = Canvas(buf)
    canvas.drawString(50, 800, "Échéance : 12/12/2026")
    canvas.drawString(350, 800, "Total TTC 1\u00a0500,00 €")
    canvas.save()
    text = read_pdf_text(buf.getvalue())
    assert "Échéance" in text and "€" in text
    line = next(x for x in text.splitlines() if "Échéance" in x)
    assert "Total TTC" in line  # same line: the layout is kept


# --------------------------------------------------------------------------- accuracy

def test_accuracy_on_generated_invoices() -> None:
    right: dict[str, int] = {}
    total: dict[str, int] = {}
    confident = confident_right = 0
    for seed in range(9000, 9060):
        pdf, expected = generate(seed)
        rec = recognize(read_pdf_text(pdf), today=TODAY)
        for name in FIELDS:
            got = rec.fields.get(name)
            if expected[name] is None and got is None:
                continue
            got_plain = got if got is None or isinstance(got, list) else str(got)
            ok = same_value(name, expected[name], got_plain)
            right[name] = right.get(name, 0) + ok
            total[name] = total.get(name, 0) + 1
            if rec.confidence.get(name, 0.0) >= CONFIDENT:
                confident += 1
                confident_right += ok
    print(f"\n{'field':20} {'right':>6} {'total':>6} {'acc':>6}")
    for name in FIELDS:
        if total.get(name):
            print(f"{name:20} {right[name]:6d} {total[name]:6d} {right[name] / total[name]:6.3f}")
    accuracy = sum(right.values()) / sum(total.values())
    print(f"field accuracy {accuracy:.4f}; confident correct {confident_right}/{confident}")
    assert accuracy >= 0.97
    assert confident_right / confident >= 0.995


# --------------------------------------------------------------------------- OCR-shaped text

def test_ocr_reading_order_labels_and_values_in_separate_blocks() -> None:
    """GIVEN tesseract's text of a totals box: the labels block, other text, the amounts
    block; WHEN recognized; THEN the k-th label goes with the k-th amount."""
    text = ("Invoice No.: INV-2026-2499\nDate of issue: 15 Jun 2026\n\nNet amount:\n\n"
            "VAT 20%:\n\nVAT 5%:\n\nInvoice total:\n\nBilled to\n\nJanssens Ltd\n\n"
            "Qty Unit price VAT Amount (EUR)\n12 1,647.27 20% 19,767.24\n5 300.30 5% 1,501.50\n"
            "21,268.74\n\n3,953.45\n\n75.08\n\n25,297.27\n")
    fields, conf, problems = read(text)
    assert (fields["total_net"], fields["total_tax"], fields["total_gross"]) == (
        Decimal("21268.74"), Decimal("4028.53"), Decimal("25297.27"))
    assert not problems and conf["total_gross"] >= CONFIDENT


def test_ocr_header_row_over_value_row_without_columns() -> None:
    text = invoice(meta=("Date Your order Ship date Invoice number\n"
                         "15 May 2026 075466 11 May 2026 202609004"))
    fields, _, _ = read(text)
    assert fields["number"] == "202609004"
    assert fields["issue_date"] == "2026-05-15"


def test_ocr_confusions_are_repaired_only_under_check_digits() -> None:
    text = invoice().replace(SELLER_VAT, "FR4O303265045")  # OCR: the letter O for a zero
    fields, conf, _ = read(text)
    assert fields["seller_vat"] == SELLER_VAT and conf["seller_vat"] >= CONFIDENT
    fields, conf, _ = read(invoice(meta="Facture n° : FAO02407\nDate : 12/11/2026"))
    assert fields["number"] == "FAO02407" and conf["number"] < CONFIDENT


def test_invalid_iban_is_a_problem_not_a_value() -> None:
    text = invoice().replace("FR76 3000 6000 0112 3456 7890 189",
                             "FR76 3000 6000 0112 3456 7890 188")
    fields, _, problems = read(text)
    assert "seller_iban" not in fields
    assert "iban-invalid" in problems


def test_subtotal_equal_to_total_without_any_tax_line() -> None:
    totals = "Subtotal          $1,250.00\nTotal             $1,250.00\nAmount due   $1,250.00"
    fields, conf, problems = read(invoice(totals=totals))
    assert fields["total_gross"] == Decimal("1250.00") and fields["total_tax"] == Decimal("0")
    assert not problems
    assert conf["total_gross"] >= CONFIDENT and conf["total_tax"] < CONFIDENT
