"""Labelled invoice generator: text PDFs (reportlab) with the values a reader should find.

``generate(seed, variant="text") -> (pdf_bytes, expected)`` draws one invoice: French, English
or Dutch/Belgian wording, one of eight layouts (classic letterhead, two-column header, totals as
a table, labels above values, right-hand meta block, inline one-liners, VAT-rate table, boxed
meta with a heavy legal footer), one of four fonts (Helvetica, Times, Courier, DejaVu Sans when
installed), several amount and date formats, one to three VAT rates, optional deposits, a due
date printed or implied by payment terms, and distractors (order and customer numbers, phone
numbers, SIRET/RCS/KvK, share capital, quantities and unit prices, delivery dates).
Identifiers are generated with valid check digits (python-stdnum, schwifty).

``expected`` has the keys of ``Recognition.fields`` (None when absent) plus ``language``,
``variant`` and ``layout``; amounts are decimal strings, dates ISO. ``write_set(dir, n, seed)``
writes ``NNN.pdf`` + ``NNN.json`` pairs, the format bench/recognition.py reads.

Conventions shared with the reader: "N jours fin de mois" = end of the month of issue + N days.
"""

from __future__ import annotations

import calendar
import json
import random
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from io import BytesIO
from pathlib import Path
from typing import Any

from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from schwifty import IBAN
from stdnum import iso11649, luhn
from stdnum.be import ogm_vcs
from stdnum.eu import vat as eu_vat
from stdnum.ie import vat as ie_vat

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
LAYOUTS = ("classic", "twocol", "table_totals", "stacked", "right_meta", "inline", "vat_table",
           "boxed")
C2 = Decimal("0.01")
W = A4[0]

T: dict[str, dict[str, Any]] = {
    "fr": {
        "title": ["FACTURE", "Facture"],
        "number": ["Facture n°", "N° de facture", "Numéro de facture", "Facture N° :"],
        "date": ["Date de facture", "Date", "Date d'émission", "Date facture"],
        "due": ["Échéance", "Date d'échéance", "À payer avant le", "Date limite de paiement"],
        "buyer": ["Facturé à", "Client", "Adresse de facturation", "Destinataire"],
        "order": ["Commande n°", "Bon de commande", "N° de commande", "Votre référence"],
        "customer": ["N° client", "Code client", "Réf. client"],
        "delivery": ["Date de livraison"], "phone": ["Tél.", "Téléphone", "Tel"],
        "net": ["Total HT", "Montant HT", "Total hors taxes", "Sous-total HT"],
        "tax": ["Total TVA", "TVA", "Montant TVA"], "gross": ["Total TTC", "Montant TTC",
                                                             "Total à payer TTC"],
        "rate_line": "TVA {r} %", "deposit": ["Acompte versé", "Déjà payé", "Acompte reçu"],
        "due_amt": ["Net à payer", "Reste à payer", "Solde à payer"],
        "cols": ["Désignation", "Qté", "Prix unitaire HT", "TVA", "Montant HT"],
        "vat_cols": ["Taux TVA", "Base HT", "Montant TVA"], "vat_id": "N° TVA intracommunautaire",
        "terms_label": "Conditions de paiement", "payref": "Référence de paiement",
        "bank": "Coordonnées bancaires", "items": ["Prestation de conseil", "Maintenance annuelle",
                                                 "Licence logicielle", "Frais de déplacement",
                                                 "Formation sur site", "Fournitures de bureau",
                                                 "Livres techniques", "Repas d'affaires"],
        "terms": [("30 jours fin de mois", "eom", 30), ("45 jours fin de mois", "eom", 45),
                  ("Paiement à réception", "days", 0), ("Paiement à 30 jours", "days", 30),
                  ("À 60 jours date de facture", "days", 60)],
        "months": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
                   "septembre", "octobre", "novembre", "décembre"],
        "rates": [Decimal("20"), Decimal("10"), Decimal("5.5")],
    },
    "en": {
        "title": ["INVOICE", "Invoice", "TAX INVOICE"], "number": ["Invoice No.", "Invoice number",
                                                                   "Invoice #", "Invoice No:"],
        "date": ["Invoice date", "Date", "Date of issue", "Issue date"],
        "due": ["Due date", "Payment due", "Due"], "buyer": ["Bill to", "Billed to", "Customer",
                                                             "Invoice to"],
        "order": ["Order no.", "PO", "Purchase order", "Your order"],
        "customer": ["Customer ID", "Account no.", "Customer number"],
        "delivery": ["Delivery date", "Ship date"], "phone": ["Phone", "Tel.", "Phone:"],
        "net": ["Subtotal", "Total excl. VAT", "Net amount", "Total before tax"],
        "tax": ["VAT", "Total VAT", "Tax"], "gross": ["Total", "Total incl. VAT", "Invoice total",
                                                     "Grand total"],
        "rate_line": "VAT {r}%", "deposit": ["Deposit paid", "Less deposit", "Amount paid"],
        "due_amt": ["Amount due", "Balance due", "Total due"],
        "cols": ["Description", "Qty", "Unit price", "VAT", "Amount"],
        "vat_cols": ["VAT rate", "Net", "VAT"], "vat_id": "VAT number",
        "terms_label": "Payment terms", "payref": "Payment reference", "bank": "Bank details",
        "items": ["Consulting services", "Annual maintenance", "Software licence", "Travel costs",
                  "On-site training", "Office supplies", "Hosting (12 months)", "Support plan"],
        "terms": [("Net 30", "days", 30), ("Net 15", "days", 15), ("Due on receipt", "days", 0),
                  ("Payment within 14 days", "days", 14), ("30 days end of month", "eom", 30)],
        "months": ["January", "February", "March", "April", "May", "June", "July", "August",
                   "September", "October", "November", "December"],
        "rates": [Decimal("20"), Decimal("5")],
    },
    "nl": {
        "title": ["FACTUUR", "Factuur"], "number": ["Factuurnummer", "Factuurnr.", "Factuur nr."],
        "date": ["Factuurdatum", "Datum"], "due": ["Vervaldatum", "Uiterste betaaldatum",
                                                   "Te betalen voor"],
        "buyer": ["Factuur aan", "Klant", "Factuuradres"],
        "order": ["Bestelnummer", "Ordernummer", "Uw referentie"],
        "customer": ["Klantnummer", "Klantnr."], "delivery": ["Leverdatum"],
        "phone": ["Tel.", "Telefoon"],
        "net": ["Totaal excl. BTW", "Subtotaal", "Totaal exclusief BTW"],
        "tax": ["BTW", "Totaal BTW", "BTW-bedrag"],
        "gross": ["Totaal incl. BTW", "Totaal", "Totaalbedrag"], "rate_line": "BTW {r}%",
        "deposit": ["Reeds betaald", "Voorschot", "Aanbetaling"],
        "due_amt": ["Te betalen", "Nog te betalen", "Openstaand bedrag"],
        "cols": ["Omschrijving", "Aantal", "Prijs", "BTW", "Bedrag"],
        "vat_cols": ["BTW-tarief", "Grondslag", "BTW"], "vat_id": "BTW-nummer",
        "terms_label": "Betalingstermijn", "payref": "Betalingskenmerk", "bank": "Bankgegevens",
        "items": ["Advieswerkzaamheden", "Onderhoudscontract", "Softwarelicentie",
                  "Reiskosten", "Training op locatie", "Kantoorartikelen", "Boeken",
                  "Webhosting"],
        "terms": [("Betaling binnen 14 dagen", "days", 14), ("Binnen 30 dagen", "days", 30),
                  ("Betaling bij ontvangst", "days", 0), ("30 dagen na factuurdatum", "days", 30)],
        "months": ["januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus",
                   "september", "oktober", "november", "december"],
        "rates": [Decimal("21"), Decimal("9"), Decimal("6"), Decimal("12")],
    },
}
FR_SHORT = ["janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.",
            "nov.", "déc."]
NAMES = ["Dupont", "Martin & Fils", "Atelier Lumière", "Vandenberg", "De Vries", "Janssens",
         "Blackwood", "Hartley", "Nordic Parts", "Orion Conseil", "Bakkerij Smit",
         "Brasserie du Port", "Kestrel Systems", "Maison Leclerc", "Van Dijk Techniek",
         "Green Leaf Studio", "Peeters & Co", "Delta Logistique"]
ACTIVITY = ["Services", "Informatique", "Consulting", "Solutions", "Distribution", "Design",
            "Industries", "Technique", "Media", "Trading"]
FORMS = {"fr": ["SAS", "SARL", "SA", "EURL"], "be": ["BV", "NV", "SRL", "SA"],
         "nl": ["B.V.", "BV", "V.O.F."], "ie": ["Ltd", "Limited"], "gb": ["Ltd", "PLC"]}
CITIES = {"fr": ["75011 Paris", "69003 Lyon", "33000 Bordeaux", "44000 Nantes", "59000 Lille"],
          "be": ["1000 Bruxelles", "2000 Antwerpen", "9000 Gent", "4000 Liège"],
          "nl": ["1012 AB Amsterdam", "3011 CD Rotterdam", "3511 EF Utrecht"],
          "ie": ["Dublin 2", "Cork T12 X123"], "gb": ["London EC1A 1BB", "Leeds LS1 4AP"]}
BANKS = {"fr": [("30006", "00001"), ("30004", "00820"), ("10107", "00175")],
         "be": [("001",), ("310",), ("068",)], "nl": [("INGB",), ("ABNA",), ("RABO",)],
         "ie": [("AIBK931152",)], "gb": [("NWBK601613",)]}


@dataclass
class Company:
    name: str
    country: str
    street: str
    city: str
    vat: str
    siren: str | None
    siret: str | None
    iban: str
    bic: str | None
    phone: str
    kvk: str | None = None


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def make_vat(rng: random.Random, country: str) -> tuple[str, str | None]:
    """(VAT number, SIREN for French companies), valid check digits."""
    while True:
        if country == "fr":
            base = str(rng.randint(1, 9)) + _digits(rng, 7)
            siren = base + luhn.calc_check_digit(base)
            vat = f"FR{(12 + 3 * (int(siren) % 97)) % 97:02d}{siren}"
            return vat, siren
        if country == "be":
            first = "0" + str(rng.randint(2, 9)) + _digits(rng, 6)
            vat = f"BE{first}{97 - int(first) % 97:02d}"
        elif country == "nl":
            d = _digits(rng, 8)
            check = sum(int(c) * (9 - i) for i, c in enumerate(d)) % 11
            vat = f"NL{d}{check}B0{rng.randint(1, 9)}" if check < 10 else ""
        elif country == "ie":
            d = str(rng.randint(1, 9)) + _digits(rng, 6)
            vat = f"IE{d}{ie_vat.calc_check_digit(d)}"
        else:
            vat = "GB" + _digits(rng, 9)
        if (vat and eu_vat.is_valid(vat)) or (country == "gb" and vat and _gb_valid(vat)):
            return vat, None


def _gb_valid(vat: str) -> bool:
    from stdnum.gb import vat as gb_vat
    return bool(gb_vat.is_valid(vat))


def make_company(rng: random.Random, country: str, lang: str) -> Company:
    form = rng.choice(FORMS[country])
    name = f"{rng.choice(NAMES)} {rng.choice(ACTIVITY)} {form}"
    vat, siren = make_vat(rng, country)
    siret = None
    if siren:
        nic = _digits(rng, 4)
        siret = siren + nic + luhn.calc_check_digit(siren + nic)
    bank = rng.choice(BANKS[country])
    cc = country.upper()
    if country == "fr":
        iban = IBAN.generate(cc, bank_code=bank[0] + bank[1], account_code=_digits(rng, 11))
    elif country == "be":
        iban = IBAN.generate(cc, bank_code=bank[0], account_code=_digits(rng, 7))
    else:
        iban = IBAN.generate(cc, bank_code=bank[0], account_code=_digits(rng, 8 if country in (
            "ie", "gb") else 10))
    bic = str(iban.bic.compact) if iban.bic is not None else None
    phone = {"fr": "+33 1 {} {} {} {}", "be": "+32 2 {} {} {}{}", "nl": "+31 20 {}{} {}{}",
             "ie": "+353 1 {}{} {}{}", "gb": "+44 20 {}{} {}{}"}[country].format(
        *(_digits(rng, 2) for _ in range(4)))
    street = rng.choice(["12 rue des Lilas", "Kerkstraat 45", "8 Harbour Road", "Avenue Louise 221",
                         "Keizersgracht 310", "3 High Street", "27 boulevard Voltaire"])
    kvk = _digits(rng, 8) if country == "nl" else None
    return Company(name, country, street, rng.choice(CITIES[country]), vat, siren, siret,
                   str(iban.compact), bic, phone, kvk)


def fmt_amount(v: Decimal, style: str, cur: str) -> str:
    sign = "-" if v < 0 else ""
    q = abs(v).quantize(C2)
    whole, frac = f"{q:.2f}".split(".")
    groups = f"{int(whole):,}"
    sym = {"EUR": "€", "GBP": "£", "USD": "$"}[cur]
    if style == "fr_nbsp":
        return f"{sign}{groups.replace(',', chr(0xA0))},{frac}\u00a0{sym}"
    if style == "fr_nnbsp":
        return f"{sign}{groups.replace(',', chr(0x202F))},{frac}\u202f{sym}"
    if style == "fr_space":
        return f"{sign}{groups.replace(',', ' ')},{frac} {sym}"
    if style == "eu_dot":
        return f"{sign}{groups.replace(',', '.')},{frac} {cur}"
    if style == "eu_sym":
        return f"{sym} {sign}{groups.replace(',', '.')},{frac}"
    if style == "en_sym":
        return f"{sign}{sym}{groups}.{frac}"
    if style == "en_plain":
        return f"{sign}{groups}.{frac}"
    return f"{sign}{whole}.{frac}"  # "1234.56"


def fmt_date(d: date, style: str, lang: str) -> str:
    months = T[lang]["months"]
    if style == "slash":
        return d.strftime("%d/%m/%Y")
    if style == "dot":
        return d.strftime("%d.%m.%Y")
    if style == "iso":
        return d.isoformat()
    if style == "long":
        return f"{d.day} {months[d.month - 1]} {d.year}"
    if style == "short":
        short = FR_SHORT[d.month - 1] if lang == "fr" else months[d.month - 1][:3]
        return f"{d.day} {short} {d.year}"
    return f"{months[d.month - 1][:3]} {d.day}, {d.year}"  # "Nov 29, 2026" (en only)


def _money(x: Decimal) -> Decimal:
    return x.quantize(C2, rounding=ROUND_HALF_UP)


def _eom(d: date) -> date:
    return d.replace(day=calendar.monthrange(d.year, d.month)[1])


def _fonts() -> list[tuple[str, str]]:
    fonts = [("Helvetica", "Helvetica-Bold"), ("Times-Roman", "Times-Bold"),
             ("Courier", "Courier-Bold")]
    if DEJAVU.exists():
        if "DejaVuSans" not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont("DejaVuSans", str(DEJAVU)))
        fonts.append(("DejaVuSans", "DejaVuSans"))
    return fonts


def build(seed: int) -> dict[str, Any]:
    """Draw every value of one invoice (no rendering)."""
    rng = random.Random(seed)
    lang = rng.choice(["fr", "fr", "en", "nl"])
    country = {"fr": "fr", "en": rng.choice(["ie", "gb", "fr"]),
               "nl": rng.choice(["nl", "be"])}[lang]
    buyer_country = {"fr": rng.choice(["fr", "fr", "be"]), "en": rng.choice(["ie", "gb", "fr"]),
                     "nl": rng.choice(["nl", "be"])}[lang]
    t = T[lang]
    rates = list(t["rates"]) if country not in ("be",) else [Decimal(r) for r in ("21", "6", "12")]
    if country == "nl":
        rates = [Decimal("21"), Decimal("9")]
    if country in ("ie",):
        rates = [Decimal("23"), Decimal("13.5")]
    seller = make_company(rng, country, lang)
    buyer = make_company(rng, buyer_country, lang)
    cur = "EUR" if lang != "en" or country in ("fr", "ie") else rng.choice(["GBP", "GBP", "USD"])
    n_rates = rng.choice([1, 1, 1, 2, 2, 3])
    used = rng.sample(rates, min(n_rates, len(rates)))
    exempt = lang == "fr" and rng.random() < 0.06
    lines = []
    for _ in range(rng.randint(1, 6)):
        qty = rng.choice([1, 1, 2, 3, 5, 10, 12])
        price = Decimal(rng.randint(150, 250000)) / 100
        rate = Decimal(0) if exempt else rng.choice(used)
        lines.append((rng.choice(t["items"]), qty, price, rate, _money(price * qty)))
    bases: dict[Decimal, Decimal] = {}
    for *_, rate, total in lines:
        bases[rate] = bases.get(rate, Decimal(0)) + total
    breakdown = [(r, b, _money(b * r / 100)) for r, b in sorted(bases.items(), reverse=True)]
    net = sum((b for _, b, _ in breakdown), Decimal(0))
    tax = sum((x for _, _, x in breakdown), Decimal(0))
    gross = net + tax
    deposit = _money(gross * Decimal(rng.choice([10, 20, 30, 50])) / 100) if rng.random() < 0.25 \
        else None
    issue = date(2026, 11, 29) - timedelta(days=rng.randint(0, 300))
    due_mode = rng.choice(["printed", "printed", "terms", "none"])
    term = rng.choice(t["terms"])
    if due_mode == "printed":
        due: date | None = issue + timedelta(days=rng.choice([15, 30, 45, 60]))
    elif due_mode == "terms":
        d = issue + timedelta(days=term[2])
        due = _eom(d) if term[1] == "eom" else d
    else:
        due = None
    number = rng.choice(["F{y}-{n:04d}", "{y}{n:05d}", "INV-{y}-{n:03d}", "FA{n:06d}",
                         "{y}/{n:04d}", "F-{n}"]).format(y=issue.year, n=rng.randint(1, 9999))
    payref = None
    if rng.random() < 0.3:
        if country == "be":
            d10 = _digits(rng, 10)
            payref = f"+++{d10[:3]}/{d10[3:7]}/{d10[7:]}{ogm_vcs.calc_check_digits(d10)}+++"
        elif lang == "en" and rng.random() < 0.5:
            ref = _digits(rng, 10)
            payref = next(f"RF{c:02d}{ref}" for c in range(100)
                          if iso11649.is_valid(f"RF{c:02d}{ref}"))
        else:
            payref = number
    amount_style = rng.choice({"fr": ["fr_nbsp", "fr_nnbsp", "fr_space", "eu_dot", "plain"],
                               "en": ["en_sym", "en_plain", "plain"],
                               "nl": ["eu_sym", "eu_dot", "fr_space", "plain"]}[lang])
    date_style = rng.choice({"fr": ["slash", "dot", "iso", "long", "short"],
                             "en": ["slash", "iso", "long", "us_text", "short"],
                             "nl": ["slash", "dot", "iso", "long"]}[lang])
    return {
        "rng": rng, "lang": lang, "t": t, "seller": seller, "buyer": buyer, "cur": cur,
        "lines": lines, "breakdown": breakdown, "net": net, "tax": tax, "gross": gross,
        "deposit": deposit, "issue": issue, "due": due, "due_mode": due_mode, "term": term,
        "number": number, "payref": payref, "amount_style": amount_style, "exempt": exempt,
        "date_style": date_style, "buyer_vat_printed": rng.random() < 0.5,
        "layout": LAYOUTS[seed % len(LAYOUTS)] if seed >= 0 else rng.choice(LAYOUTS),
        "font": _fonts()[rng.randrange(len(_fonts()))],
        "order_no": f"{rng.choice(['PO-', 'CMD', '', 'BC-'])}{_digits(rng, rng.choice([5, 6, 8]))}",
        "customer_no": f"{rng.choice(['C', 'CL', ''])}{_digits(rng, rng.choice([4, 5, 6]))}",
        "delivery": issue - timedelta(days=rng.randint(1, 20)),
    }


def expected_of(inv: dict[str, Any]) -> dict[str, Any]:
    s, b = inv["seller"], inv["buyer"]
    due_amount = inv["gross"] - (inv["deposit"] or 0)
    return {
        "number": inv["number"], "issue_date": inv["issue"].isoformat(),
        "due_date": inv["due"].isoformat() if inv["due"] else None,
        "seller_name": s.name, "seller_vat": s.vat, "seller_siren": s.siren,
        "seller_iban": s.iban, "seller_bic": s.bic if inv.get("bic_printed", True) else None,
        "buyer_name": b.name, "buyer_vat": b.vat if inv["buyer_vat_printed"] else None,
        "currency": inv["cur"], "total_net": f"{inv['net']:.2f}", "total_tax": f"{inv['tax']:.2f}",
        "total_gross": f"{inv['gross']:.2f}", "amount_due": f"{due_amount:.2f}",
        "payment_reference": inv["payref"],
        "vat_breakdown": None if inv["exempt"] else [
            {"rate": format(r.normalize(), "f"), "base": f"{base:.2f}", "tax": f"{x:.2f}"}
            for r, base, x in inv["breakdown"]],
        "language": inv["lang"], "variant": "text", "layout": inv["layout"],
    }


def generate(seed: int, variant: str = "text") -> tuple[bytes, dict[str, Any]]:
    """One labelled invoice as a text PDF, and the values it holds."""
    if variant != "text":
        raise ValueError(f"only the 'text' variant is generated here, not {variant!r}")
    inv = build(seed)
    buf = BytesIO()
    canvas = Canvas(buf, pagesize=A4, invariant=True)
    render(canvas, inv)
    canvas.save()
    return buf.getvalue(), expected_of(inv)


def write_set(directory: str | Path, n: int, seed: int = 0) -> list[Path]:
    """Write ``n`` invoices as NNN.pdf + NNN.json into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(n):
        pdf, expected = generate(seed * 100_000 + i)
        (out / f"{i:03d}.pdf").write_bytes(pdf)
        (out / f"{i:03d}.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False))
        written.append(out / f"{i:03d}.pdf")
    return written


# --------------------------------------------------------------------------- rendering


class Page:
    """Thin drawing helper: text at (x, y) left/right aligned in the invoice's font."""

    def __init__(self, canvas: Canvas, inv: dict[str, Any]) -> None:
        self.c, self.inv = canvas, inv
        self.font, self.bold = inv["font"]

    def text(self, x: float, y: float, s: str, size: float = 9, bold: bool = False,
             right: bool = False) -> None:
        self.c.setFont(self.bold if bold else self.font, size)
        if self.font != "DejaVuSans":
            s = s.replace("\u202f", "\u00a0")
        (self.c.drawRightString if right else self.c.drawString)(x, y, s)

    def money(self, v: Decimal) -> str:
        return fmt_amount(v, self.inv["amount_style"], self.inv["cur"])

    def date(self, d: date) -> str:
        style = self.inv["date_style"]
        return fmt_date(d, style if style != "us_text" or self.inv["lang"] == "en" else "long",
                        self.inv["lang"])


def _pick(inv: dict[str, Any], key: str) -> str:
    return str(inv["rng"].choice(inv["t"][key]))


def _letterhead(p: Page, x: float, y: float, right: bool = False) -> float:
    s = p.inv["seller"]
    p.text(x, y, s.name, 13, bold=True, right=right)
    for line in (s.street, s.city, f"{_pick(p.inv, 'phone')} {s.phone}",
                 f"contact@{s.name.split()[0].lower().replace('&', '')}.example"):
        y -= 12
        p.text(x, y, line, 9, right=right)
    return y - 14


def _buyer(p: Page, x: float, y: float, inline: bool = False) -> float:
    b, inv = p.inv["buyer"], p.inv
    label = _pick(inv, "buyer")
    vat_label = {"fr": "N° TVA", "en": "VAT no.", "nl": "BTW-nr."}[inv["lang"]]
    if inline:
        p.text(x, y, f"{label} : {b.name}, {b.street}, {b.city}", 9)
        if inv["buyer_vat_printed"]:
            p.text(x, y - 12, f"{vat_label} client : {b.vat}" if inv["lang"] == "fr"
                   else f"Customer {vat_label} {b.vat}" if inv["lang"] == "en"
                   else f"{vat_label} klant: {b.vat}", 9)
        return y - 28
    p.text(x, y, label + ("" if inv["rng"].random() < 0.5 else " :"), 9, bold=True)
    for i, line in enumerate((b.name, b.street, b.city)):
        p.text(x, y - 13 * (i + 1), line, 10 if i == 0 else 9)
    y -= 52
    if inv["buyer_vat_printed"]:
        p.text(x, y, f"{vat_label} : {b.vat}", 9)
        y -= 13
    return y - 6


def _meta(inv: dict[str, Any], p: Page) -> list[tuple[str, str]]:
    rows = [(_pick(inv, "number"), inv["number"]), (_pick(inv, "date"), p.date(inv["issue"]))]
    if inv["due_mode"] == "printed":
        rows.append((_pick(inv, "due"), p.date(inv["due"])))
    rng = inv["rng"]
    extras = [(_pick(inv, "order"), inv["order_no"]), (_pick(inv, "customer"), inv["customer_no"]),
              (_pick(inv, "delivery"), p.date(inv["delivery"]))]
    rng.shuffle(extras)
    rows += extras[:rng.randint(1, 3)]
    rows.insert(rng.randint(1, len(rows)), rows.pop(0)) if rng.random() < 0.3 else None
    return rows


def _four(meta: list[tuple[str, str]], inv: dict[str, Any]) -> list[tuple[str, str]]:
    """Four meta rows for one-row layouts, always with the number and the issue date."""
    keep = [r for r in meta if r[1] == inv["number"] or r[0] in inv["t"]["date"]]
    chosen = keep + [r for r in meta if r not in keep][:max(0, 4 - len(keep))]
    return [r for r in meta if r in chosen]


def _items(p: Page, y: float, with_rate: bool) -> float:
    inv, t = p.inv, p.inv["t"]
    cols = t["cols"] if with_rate else [c for i, c in enumerate(t["cols"]) if i != 3]
    if inv["amount_style"] in ("plain", "en_plain"):  # no symbol on amounts: say it once
        cols = [*cols[:-1], f"{cols[-1]} ({inv['cur']})"]
    xs = [40, 285, 390, 455, 555] if with_rate else [40, 320, 420, 555]
    for i, col in enumerate(cols):
        p.text(xs[i], y, col, 9, bold=True, right=i > 0)
    p.c.line(40, y - 4, 555, y - 4)
    for desc, qty, price, rate, total in inv["lines"]:
        y -= 14
        vals = [desc, str(qty), p.money(price)] + ([f"{format(rate.normalize(), 'f')} %"]
                                                   if with_rate else []) + [p.money(total)]
        for i, v in enumerate(vals):
            p.text(xs[i], y, v, 9, right=i > 0)
    return y - 22


def _totals(inv: dict[str, Any], p: Page) -> list[tuple[str, str]]:
    rows = [(_pick(inv, "net"), p.money(inv["net"]))]
    if inv["exempt"]:
        pass
    elif len(inv["breakdown"]) > 1 or inv["rng"].random() < 0.5:
        for r, _, x in inv["breakdown"]:
            rows.append((inv["t"]["rate_line"].format(r=_rate(r, inv)), p.money(x)))
        if len(inv["breakdown"]) > 1 and inv["rng"].random() < 0.5:
            rows.append((inv["t"]["tax"][1], p.money(inv["tax"])))
    else:
        rows.append((_pick(inv, "tax"), p.money(inv["tax"])))
    rows.append((_pick(inv, "gross") if not inv["exempt"] else _pick(inv, "due_amt"),
                 p.money(inv["gross"])))
    if inv["deposit"]:
        rows.append((_pick(inv, "deposit"), p.money(-inv["deposit"] if inv["rng"].random() < 0.6
                                                     else inv["deposit"])))
        rows.append((_pick(inv, "due_amt"), p.money(inv["gross"] - inv["deposit"])))
    return rows


def _rate(r: Decimal, inv: dict[str, Any]) -> str:
    text = format(r.normalize(), "f")
    return text.replace(".", ",") if inv["lang"] != "en" else text


def _notes(p: Page, x: float, y: float) -> float:
    inv, t = p.inv, p.inv["t"]
    if inv["exempt"]:
        p.text(x, y, "TVA non applicable, art. 293 B du CGI", 8)
        y -= 12
    if inv["due_mode"] == "terms":
        p.text(x, y, f"{t['terms_label']} : {inv['term'][0]}", 9)
        y -= 12
    if inv["payref"]:
        label = "Communication" if inv["payref"].startswith("+++") and inv["lang"] != "en" \
            else t["payref"]
        p.text(x, y, f"{label} : {inv['payref']}", 9)
        y -= 12
    s = inv["seller"]
    iban = " ".join(s.iban[i:i + 4] for i in range(0, len(s.iban), 4))
    bank = f"{t['bank']} - IBAN : {iban}"
    if s.bic:
        bank += f" - BIC : {s.bic}"
    p.text(x, y, bank, 8)
    return y - 14


def _legal(p: Page, y: float) -> None:
    s, inv = p.inv["seller"], p.inv
    capital = fmt_amount(Decimal(inv["rng"].choice([1000, 5000, 10000, 50000, 150000])),
                         "fr_space", "EUR").replace(",00", "")
    vat = s.vat if inv["rng"].random() < 0.5 else \
        f"{s.vat[:4]} {s.vat[4:7]} {s.vat[7:10]} {s.vat[10:]}"
    if s.country == "fr":
        siren = f"{s.siren[:3]} {s.siren[3:6]} {s.siren[6:]}"
        lines = [f"{s.name} au capital de {capital} - RCS Paris {siren} - SIRET {s.siret}",
                 f"N° TVA intracommunautaire : {vat} - Code APE 6202A"]
    elif s.country == "be":
        lines = [f"{s.name} - {inv['t']['vat_id']} {vat} - RPR Brussel",
                 f"{_pick(inv, 'phone')} {s.phone}"]
    elif s.country == "nl":
        lines = [f"{s.name} - KvK {s.kvk} - {inv['t']['vat_id']} {vat}"]
    else:
        lines = [f"{s.name}, registered in {'Ireland' if s.country == 'ie' else 'England'} "
                 f"No. {s.phone[-5:].replace(' ', '')}8 - VAT number {vat}"]
    for line in lines:
        p.c.setFont(p.font, 7)
        p.c.drawCentredString(W / 2, y, line.replace("\u202f", "\u00a0")
                              if p.font != "DejaVuSans" else line)
        y -= 10


def _totals_block(p: Page, rows: list[tuple[str, str]], y: float, lx: float = 340,
                  colon: bool = True) -> float:
    for label, value in rows:
        p.text(lx, y, label + (" :" if colon and p.inv["lang"] == "fr" else ":" if colon else ""),
               9, bold=label == rows[-1][0])
        p.text(555, y, value, 9, bold=label == rows[-1][0], right=True)
        y -= 14
    return y - 8


def render(canvas: Canvas, inv: dict[str, Any]) -> None:
    p = Page(canvas, inv)
    layout, t, rng = inv["layout"], inv["t"], inv["rng"]
    title = _pick(inv, "title")
    meta = _meta(inv, p)
    totals = _totals(inv, p)
    if layout == "classic":
        _letterhead(p, 40, 790)
        _buyer(p, 340, 780)
        p.text(40, 680, title, 16, bold=True)
        y = 660
        for label, value in meta:
            p.text(40, y, f"{label} : {value}" if inv["lang"] == "fr" else f"{label}: {value}", 9)
            y -= 13
        y = _items(p, y - 16, True)
        y = _totals_block(p, totals, y)
    elif layout == "twocol":
        _letterhead(p, 40, 790)
        p.text(340, 790, title, 16, bold=True)
        y = 770
        for label, value in meta:
            p.text(340, y, label, 9)
            p.text(450, y, value, 9)
            y -= 13
        _buyer(p, 40, 700)
        y = _items(p, 600, rng.random() < 0.5)
        y = _totals_block(p, totals, y, lx=330, colon=False)
    elif layout == "table_totals":
        _letterhead(p, 40, 790)
        _buyer(p, 340, 780)
        p.text(40, 690, f"{title} {meta[0][1]}" if meta[0][0] == t["number"][0] and rng.random()
               < 0.3 else title, 16, bold=True)
        y = 670
        for label, value in meta:
            p.text(40, y, f"{label} : {value}", 9)
            y -= 13
        y = _items(p, y - 14, True)
        xs = [300, 420, 555]
        heads = [_pick(inv, "net"), _pick(inv, "tax") if not inv["exempt"] else "TVA",
                 _pick(inv, "gross")]
        for x, h in zip(xs, heads, strict=True):
            p.text(x, y, h, 9, bold=True, right=True)
        vals = [inv["net"], inv["tax"], inv["gross"]]
        for x, v in zip(xs, vals, strict=True):
            p.text(x, y - 14, p.money(v), 9, right=True)
        y -= 34
        y = _totals_block(p, totals[-2:] if inv["deposit"] else [], y)
    elif layout == "stacked":
        _letterhead(p, 40, 790)
        p.text(555, 790, title, 16, bold=True, right=True)
        xs = [40, 170, 300, 430]
        for i, (label, value) in enumerate(_four(meta, inv)):
            p.text(xs[i], 690, label, 8, bold=True)
            p.text(xs[i], 676, value, 9)
        _buyer(p, 40, 650)
        y = _items(p, 560, False)
        for label, value in totals:
            p.text(555, y, label, 8, right=True)
            p.text(555, y - 11, value, 10, bold=True, right=True)
            y -= 28
    elif layout == "right_meta":
        _letterhead(p, 555, 790, right=True)
        p.text(40, 790, title, 20, bold=True)
        y = 760
        for label, value in meta:
            p.text(40, y, f"{label}  {value}", 9)
            y -= 12
        _buyer(p, 40, 690)
        y = _items(p, 600, True)
        y = _totals_block(p, totals, y, lx=40)
    elif layout == "inline":
        s = inv["seller"]
        p.text(40, 800, f"{s.name} - {s.street} - {s.city} - {_pick(inv, 'phone')} {s.phone}", 8)
        head = {"fr": f"{title} {inv['number']} du {p.date(inv['issue'])}",
                "en": f"{title} {inv['number']} dated {p.date(inv['issue'])}",
                "nl": f"{title} {inv['number']} van {p.date(inv['issue'])}"}[inv["lang"]]
        p.text(40, 760, head, 14, bold=True)
        y = 740
        rest = [m for m in meta[1:] if m[0] not in t["date"] and m[0] not in t["number"]]
        p.text(40, y, "   ".join(f"{a}: {b}" for a, b in rest), 9)
        y = _buyer(p, 40, y - 24, inline=True)
        y = _items(p, y - 10, rng.random() < 0.5)
        p.text(40, y, "   ".join(f"{a}: {b}" for a, b in totals[:3]), 9)
        y -= 14
        if len(totals) > 3:
            p.text(40, y, "   ".join(f"{a}: {b}" for a, b in totals[3:]), 9)
        y -= 20
    elif layout == "vat_table":
        _letterhead(p, 40, 790)
        _buyer(p, 340, 780)
        p.text(40, 680, title, 16, bold=True)
        y = 660
        for label, value in meta:
            p.text(40, y, f"{label} : {value}", 9)
            y -= 13
        y = _items(p, y - 14, True)
        if not inv["exempt"]:
            for x, h in zip((40, 150, 260), t["vat_cols"], strict=True):
                p.text(x, y, h, 8, bold=True)
            for r, base, x_ in inv["breakdown"]:
                y -= 12
                p.text(40, y, f"{_rate(r, inv)} %", 8)
                p.text(200, y, p.money(base), 8, right=True)
                p.text(310, y, p.money(x_), 8, right=True)
        rows = [totals[0]] + [r for r in totals[1:] if r[0] not in
                              [t["rate_line"].format(r=_rate(b[0], inv)) for b in inv["breakdown"]]]
        if not inv["exempt"] and len(rows) == len(totals) - len(inv["breakdown"]):
            rows.insert(1, (t["tax"][1], p.money(inv["tax"])))
        y = _totals_block(p, rows, y + 12 * len(inv["breakdown"]))
        y -= 12 * len(inv["breakdown"])
    else:  # boxed
        _letterhead(p, 40, 790)
        p.text(555, 790, title, 18, bold=True, right=True)
        heads = _four(meta, inv)
        width = 515 / len(heads)
        canvas.rect(40, 650, 515, 36)
        for i, (label, value) in enumerate(heads):
            p.text(44 + i * width, 674, label, 8, bold=True)
            p.text(44 + i * width, 658, value, 9)
        _buyer(p, 340, 630)
        y = _items(p, 540, True)
        canvas.rect(330, y - 14 * len(totals) + 4, 225, 14 * len(totals) + 6)
        y = _totals_block(p, totals, y)
    y = min(y, 200)
    _notes(p, 40, y - 10)
    _legal(p, 60)


# --------------------------------------------------------------------------- comparison

_FORMS = {"sas", "sasu", "sarl", "sa", "eurl", "snc", "bv", "b v", "nv", "n v", "bvba", "sprl",
          "srl", "vof", "v o f", "ltd", "limited", "llp", "plc", "llc", "inc", "gmbh", "ag",
          "corp", "kg", "ug"}


def norm_name(text: str) -> str:
    """Case, accents, spacing, punctuation and a trailing legal form do not matter."""
    import re
    import unicodedata
    plain = "".join(c for c in unicodedata.normalize("NFKD", text)
                    if not unicodedata.combining(c))
    words = re.sub(r"[^\w&]+", " ", plain.casefold()).split()
    joined = " ".join(words)
    for form in sorted(_FORMS, key=len, reverse=True):
        if joined.endswith(" " + form):
            joined = joined[: -len(form) - 1]
            break
    return joined.strip()


def same_value(field: str, expected: Any, got: Any) -> bool:
    """Field comparison used by the tests and the bench."""
    if expected is None or got is None:
        return expected is None and got is None
    if field in ("total_net", "total_tax", "total_gross", "amount_due"):
        return Decimal(str(expected)) == Decimal(str(got))
    if field == "vat_breakdown":
        def key(rows: Any) -> set[tuple[Decimal, Decimal, Decimal]]:
            return {(Decimal(str(r["rate"])), Decimal(str(r["base"])), Decimal(str(r["tax"])))
                    for r in rows}
        return key(expected) == key(got)
    if field in ("seller_name", "buyer_name"):
        return norm_name(str(expected)) == norm_name(str(got))
    if field == "seller_bic":
        return str(expected).upper().removesuffix("XXX") == str(got).upper().removesuffix("XXX")
    if field in ("seller_vat", "buyer_vat", "seller_iban", "number",
                 "payment_reference", "seller_siren"):
        def compact(x: Any) -> str:
            return "".join(str(x).split()).upper()
        return compact(expected) == compact(got)
    return " ".join(str(expected).split()).casefold() == " ".join(str(got).split()).casefold()
