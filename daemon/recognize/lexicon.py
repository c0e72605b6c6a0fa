"""Labels printed on invoices, in French, English and Dutch (plus common German ones).

Job: find every label occurrence in a document ("Facture n°", "Invoice number", "Total HT",
"Totaal incl. BTW", "N° client", "Commande n°", "au capital de", ...) as a ``Hit`` with a role
and a strength, resolving overlaps in favour of the longest match, so that "Date de facture
associée" is not read as "Date de facture" and "N° de commande" is not "N°".

Roles that name a field: number, issue_date, due_date, terms, net, tax, gross, due, deposit,
vat_id, buyer_vat, siren, siret, rcs, iban, bic, payment_ref, seller, buyer.
Roles that only exist to *stop* a value from going elsewhere (distractors): order_no,
customer_no, other_date, phone, capital, kvk, item (line-item column headers), other_ref.

What it may touch: nothing (compiled regexes over folded text: lower case, no accents).

Limits: vocabulary is finite; a label worded otherwise is not found and its value is then
only reachable through validation (IBAN, VAT) or arithmetic (totals).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from daemon.recognize.text import Doc

_N = r"(?:n\s?°|no\b\.?|nr\b\.?|num(?:ero|\b\.?)|#|nummer)"
_HT = r"h\.?\s?t\.?(?:v\.?a\.?)?(?![a-z])"
_TTC = r"(?:t\.?\s?[tl1i]\.?\s?c\.?|tvac)(?![a-z])"  # "TIC", "TLC": OCR for TTC
_TVA = r"t\.?\s?v\.?\s?a\.?(?![a-z])"
_EXCL = (r"(?:excl\.?|exclusief|excluding|exclusive\s+of|ex\.?|before|w/o|without|hors|"
         r"net\s+of|ohne|zzgl\.?)")
_INCL = r"(?:incl\.?|inclusief|including|inclusive\s+of|incl|with|inkl\.?|mit)"
_TAXW = r"(?:vat|tax(?:es)?|gst|btw|b\.t\.w\.?|tva|mwst\.?)"

_LEXICON: dict[str, tuple[tuple[str, float], ...]] = {
    "number": (
        (r"factur(?:e|ation)\s*" + _N, 1.0), (_N + r"\s*(?:de\s+(?:la\s+)?)?facture", 1.0),
        (r"(?:factur(?:e|ation)|invoice|factuur)(?:\s+(?!associee|precedente|d'origine|initiale|"
         r"related|original)[a-z']+){1,2}\s*" + _N, 0.95),
        (r"note\s+d'honoraires\s*" + _N, 1.0),
        (r"invoice\s*(?:" + _N + r"|number|id\b|ref(?:erence)?\b)", 1.0),
        (r"inv\.?\s*" + _N, 0.9), (r"factuur\s*" + _N, 1.0), (r"factuurnummer", 1.0),
        (r"factuurnr\.?", 1.0), (r"numero\s+(?:de\s+)?facture", 1.0),
        (r"(?:avoir|credit\s*note|creditnota|note\s+de\s+credit)\s*" + _N, 1.0),
        (r"rechnungs?\s*-?\s*(?:nummer|nr\.?|" + _N + r")", 1.0), (r"bill\s*" + _N, 0.8),
        (r"(?:tax\s+)?invoice", 0.55), (r"facture", 0.55), (r"factuur", 0.55),
        (r"avoir", 0.5), (r"credit\s+note", 0.5), (r"rechnung", 0.5),
        (r"(?:numero|number|nummer)(?=\s*:)", 0.6), (r"n\s?°(?=\s*:)", 0.6),
        (r"(?:numero|number|nummer)(?= {2}| ?$)", 0.5),
        (r"(?<!\S)#(?=\s*[a-z0-9])", 0.6),
    ),
    "issue_date": (
        (r"date\s+(?:de\s+(?:la\s+)?)?factur(?:e|ation)", 1.0), (r"date\s+d'?\s*emission", 1.0),
        (r"invoice\s+date", 1.0), (r"date\s+of\s+(?:the\s+)?(?:invoice|issue)", 1.0),
        (r"(?:issue|issuing|billing)\s+date", 1.0), (r"date\s+issued", 1.0),
        (r"issued(?:\s+(?:on|at))?", 0.9), (r"factuur\s*datum", 1.0), (r"datum\s+factuur", 1.0),
        (r"(?:facture|invoice|factuur|rechnung)\s+(?:du|of|dated|van|vom)", 0.9),
        (r"(?<=,)\s?le(?=\s+\d)", 0.8),
        (r"rechnungsdatum", 1.0), (r"date\s+facture", 1.0), (r"date", 0.6), (r"datum", 0.6),
        (r"dated", 0.6),
    ),
    "due_date": (
        (r"date\s+d'?\s*echeance", 1.0), (r"echeance", 1.0),
        (r"date\s+limite\s+(?:de\s+)?(?:paiement|reglement)", 1.0),
        (r"a\s+(?:payer|regler)\s+(?:avant\s+le|au\s+plus\s+tard\s+le|le|avant)", 1.0),
        (r"payable\s+(?:le|avant\s+le|au|avant|by|on|before)", 1.0), (r"due\s+date", 1.0),
        (r"payment\s+due(?:\s+(?:date|by|on))?", 1.0), (r"due\s+(?:on|by|before)", 0.9),
        (r"due", 0.8),
        (r"pay(?:ment)?\s+by", 0.9), (r"please\s+(?:pay|remit)\s+(?:by|before|until)", 1.0),
        (r"remit\s+(?:by|until|before)", 0.9), (r"vervaldatum", 1.0), (r"vervaldag", 1.0),
        (r"uiterste\s+betaal(?:datum|dag)", 1.0),
        (r"(?:te\s+)?betalen\s+(?:voor|uiterlijk(?:\s+op)?|tegen)", 1.0),
        (r"faelligkeit(?:sdatum)?|fallig(?:keit)?|zahlbar\s+bis", 1.0), (r"avant\s+le", 0.8),
    ),
    "terms": (
        (r"(?:conditions?|modalites?|delai)\s+de\s+(?:paiement|reglement)", 0.5),
        (r"payment\s+terms?|terms\s+of\s+payment", 0.5),
        (r"betalings(?:voorwaarden|termijn|conditie)", 0.5),
    ),
    "net": (
        (r"(?:total|montant)\s+(?:eur\s+|€\s+)?(?:net\s+|total\s+)?" + _HT, 1.0),
        (r"(?:total|montant)\s+hors\s+(?:taxes?|tva)", 1.0), (r"total\s+net(?:\s+" + _HT + ")?",
                                                              1.0),
        (r"net\s+" + _HT, 1.0), (r"sous[-\s]?total(?:\s+" + _HT + ")?", 0.95),
        (r"base\s+(?:" + _HT + r"|imposable|tva)", 0.8),
        (r"(?:total|amount|subtotal|totaal|bedrag|subtotaal|prix)\s+" + _EXCL + r"\s*" + _TAXW,
         1.0),
        (_EXCL + r"\s*" + _TAXW, 0.9), (r"sub[-\s]?total", 0.95), (r"subtotaal", 0.95),
        (r"net\s+(?:total|amount|value)", 1.0), (r"(?:totaal|summe|gesamt)\s*netto", 1.0),
        (r"netto\s*(?:bedrag|betrag|summe)?", 0.8), (r"nettobetrag", 1.0), (_HT, 0.7),
        (r"maatstaf\s+van\s+heffing", 0.8), (r"zwischensumme", 0.9), (r"net\s+amout", 1.0),
        (r"(?:rechnungs|gesamt)?summe\s+(?:ohne|exkl\.?|zzgl\.?)\s+(?:ust|mwst)\.?", 1.0),
        (r"(?:netto|waren)(?:summe|wert|betrag)|summe\s+positionen", 0.9),
    ),
    "tax": (
        (r"(?:total|montant)\s+(?:de\s+(?:la\s+)?|total\s+)?" + _TVA, 1.0),
        (r"total\s+(?:vat|tax(?:es)?|gst|btw)", 1.0), (r"(?:vat|tax|gst)\s+(?:amount|total)",
                                                      1.0),
        (r"totaal\s+btw|btw[-\s]?bedrag|bedrag\s+btw", 1.0), (r"taxes", 0.6),
        (r"(?:steuer|ust\.?|mwst\.?|umsatzsteuer)\s*-?\s*betrag|(?:ust|mwst)\.?\s+gesamt", 1.0),
        (r"(?:summe\s+)?(?:mwst|ust|umsatzsteuer|mehrwertsteuer)\.?", 0.8),
        (r"(?:plus\s+)?(?:vat|tax|gst|btw|b\.t\.w\.?|sales\s+tax)", 0.8), (_TVA, 0.8),
    ),
    "gross": (
        (r"(?:total|montant)\s+(?:eur\s+|€\s+)?(?:total\s+|net\s+|a\s+payer\s+)?" + _TTC, 1.0),
        (r"total\s+toutes\s+taxes(?:\s+comprises)?", 1.0),
        (r"(?:total|montant|amount|totaal|bedrag|prix)\s+" + _INCL + r"\s*" + _TAXW, 1.0),
        (_INCL + r"\s*" + _TAXW, 0.9), (r"(?:grand|invoice)\s+total", 1.0),
        (r"total\s+(?:invoice|amount)", 1.0), (r"total\s+(?:general|facture|de\s+la\s+facture)",
                                               1.0),
        (r"montant\s+total(?:\s+de\s+la\s+facture)?", 0.95), (r"totaalbedrag", 1.0),
        (r"factuur\s*(?:bedrag|totaal)", 1.0), (r"(?:gesamt|rechnungs|brutto)betrag", 1.0),
        (r"(?:gesamtsumme|summe\s+brutto|endbetrag|bruttosumme|rechnungssumme)", 1.0),
        (_TTC, 0.8),
        (r"total", 0.6), (r"totaal", 0.6), (r"summe", 0.5),
    ),
    "due": (
        (r"net\s+a\s+payer", 1.0), (r"reste\s+(?:a\s+(?:payer|regler)|du)", 1.0),
        (r"solde\s+(?:a\s+payer|du|restant\s+du|a\s+regler)", 1.0),
        (r"(?:montant|somme|total)\s+(?:net\s+)?(?:a\s+(?:payer|regler)|du|restant\s+du)", 1.0),
        (r"a\s+payer", 0.8), (r"restant\s+du", 1.0),
        (r"(?:amount|total|balance)\s+(?:due|payable|to\s+pay|owing|outstanding)", 1.0),
        (r"(?:please\s+pay|pay\s+this\s+amount)", 0.9), (r"due\s+payable", 1.0),
        (r"residual(?:\s+amount)?|(?:remaining|outstanding)\s+(?:balance|amount)|"
         r"balance\s+(?:remaining|outstanding)|amount\s+remaining", 1.0),
        (r"(?:totaal\s+)?(?:nog\s+)?te\s+betalen(?:\s+bedrag)?", 1.0),
        (r"openstaand(?:\s+(?:bedrag|saldo))?", 1.0), (r"saldo\s+(?:te\s+betalen|verschuldigd)",
                                                       1.0),
        (r"(?:zahlbetrag|zu\s+zahlen(?:der\s+betrag)?|faelliger\s+betrag)", 1.0),
        (r"balance", 0.7),
        (r"saldo", 0.7), (r"solde", 0.7),
    ),
    "deposit": (
        (r"acomptes?(?:\s+(?:verses?|recus?|deja\s+(?:verses?|regles?|payes?)|percus?|factures?))?",
         1.0),
        (r"(?:montant\s+|somme\s+)?deja\s+(?:paye|regle|verse|percu|facture)", 1.0),
        (r"(?:avance|arrhes)(?:\s+versees?)?", 0.9),
        (r"(?:less\s+)?deposits?(?:\s+(?:paid|received))?", 1.0),
        (r"(?:less\s+)?(?:amount\s+)?(?:already\s+)?paid(?:\s+(?:to\s+date|in\s+advance))?", 0.9),
        (r"advance\s+payments?|payments?\s+received|prepayments?|prepaid", 1.0),
        (r"(?:reeds|al)\s+betaald|voorschot(?:ten)?(?:\s+(?:betaald|ontvangen))?", 1.0),
        (r"aanbetaling|vooruitbetaling|(?:erhaltene\s+)?anzahlung(?:en)?|"
         r"bereits\s+(?:bezahlt|gezahlt)", 1.0),
        (r"betaald|paye", 0.6), (r"provision(?:s)?(?:\s+(?:recue|versee|sur\s+honoraires))?",
                                  0.9),
    ),
    "order_no": (
        (r"(?:bon\s+de\s+)?commande(?:\s*" + _N + r")?", 1.0),
        (_N + r"\s*(?:de\s+)?(?:bon\s+de\s+)?commande", 1.0),
        (r"purchase\s+order(?:\s*" + _N + r"|\s+number)?", 1.0),
        (r"p\.?\s?o\.?\s*(?:" + _N + r"|number|ref(?:erence)?)", 1.0), (r"po(?=\s*[:#]|\s+\d)",
                                                                        1.0),
        (r"(?:your\s+|our\s+)?order(?:\s*(?:" + _N + r"|number|id\b|ref(?:erence)?))?", 1.0),
        (r"bestel(?:ling)?\s*(?:nummer|nr\.?|referentie)|ordernummer|ordernr\.?|order\s*nummer",
         1.0),
        (r"(?:votre|notre|vos|nos|your|our|uw|onze)\s+ref(?:erences?|erentie|\.)?", 1.0),
        (r"ref(?:erence)?\s+(?:commande|acheteur|projet|comptable|appel\s+d'offres|contrat)",
         1.0),
        (r"(?:bon\s+de\s+(?:livraison|vente|reception)|delivery\s+note|leverbon|lieferschein)"
         r"(?:\s*" + _N + r")?", 1.0), (_N + r"\s*(?:de\s+)?(?:bl|contrat)", 1.0),
        (r"(?:devis|quote|quotation|offerte|dossier|contrat|contract|projet|project|auftrag)"
         r"(?:\s*(?:" + _N + r"|number|nummer))?", 0.9),
        (r"(?:ihre\s+)?bestellung(?:\s*" + _N + r")?", 1.0), (r"mandat(?:e)?(?:\s+id)?", 0.9),
        (r"(?:rum|reference\s+unique\s+de\s+mandat)", 1.0),
        (_N + r"\s*(?:de\s+)?facture\s+associee|facture\s+associee", 1.0),
        (r"deposit\s+code", 1.0),
    ),
    "customer_no": (
        (_N + r"\s*(?:de\s+)?(?:compte\s+)?client", 1.0),
        (r"(?:code|numero|compte|ref(?:erence)?|id\.?|identifiant)\s*client", 1.0),
        (r"client\s*(?:" + _N + r"|id\b|number|code)", 1.0),
        (r"customer\s*(?:" + _N + r"|id\b|number|code|ref(?:erence)?|account)", 1.0),
        (r"account\s*(?:" + _N + r"|number|id\b)", 1.0), (r"klant(?:en)?\s*(?:nummer|nr\.?|code)",
                                                          1.0),
        (r"debiteur(?:en)?\s*(?:nummer|nr\.?)", 1.0), (r"kunden\s*-?\s*(?:nummer|nr\.?)", 1.0),
        (r"(?:member|abonne|subscriber)(?:\s*" + _N + r")?", 0.9),
        (r"(?:" + _N + r"|numero)\s*de\s*ligne|line\s+number", 1.0), (r"id\.?\s?client", 1.0),
    ),
    "other_date": (
        (r"date\s+(?:de\s+)?(?:la\s+)?(?:commande|livraison|prestation|debut|fin|expedition|"
         r"facture\s+associee|debut\s+de\s+prestation|fin\s+de\s+prestation|remise|operation)",
         1.0),
        (r"(?:order|delivery|shipping|ship|service|start|end|supply|tax\s+point)\s+date", 1.0),
        (r"date\s+of\s+(?:delivery|order|supply|service)", 1.0),
        (r"(?:order|bestel|lever|leverings|prestatie)\s*datum", 1.0),
        (r"(?:liefer|leistungs|bestell)datum", 1.0), (r"periode|period|periodo", 0.9),
        (r"valable\s+jusqu'au|valid\s+until|geldig\s+tot|remise\s+a\s+zero", 1.0),
        (r"fin\s+d'engagement|date\s+echue", 1.0),
    ),
    "delivery": ((r"adresse\s+de\s+livraison|livraison|delivery\s+address|ship(?:ping)?\s+to|"
                  r"deliver\s+to|afleveradres|leveringsadres|lieferadresse|lieferanschrift", 1.0),),
    "phone": ((r"tel(?:ephone|\.)?|phone|fax|mobile?|gsm|portable|telefo(?:o)?n|ph\.", 1.0),),
    "capital": ((r"(?:au\s+)?capital(?:\s+social)?(?:\s+de)?|share\s+capital|"
                 r"(?:maatschappelijk\s+)?kapitaal|stammkapital", 1.0),),
    "siren": ((r"siren(?!\s*/\s*siret)", 1.0),),
    "siret": ((r"siret|siren\s*/\s*siret", 1.0),),
    "rcs": ((r"r\.?\s?c\.?\s?s\.?(?![a-z])", 1.0),),
    "kvk": ((r"kvk(?:-?nummer|\s*nr\.?)?|kamer\s+van\s+koophandel|(?:code\s+)?(?:ape|naf)"
             r"(?![a-z])|hra?\s+\d|hrb|coc(?![a-z])", 1.0),),
    "vat_id": (
        (r"(?:" + _N + r"|numero|identifiant|id)\s*(?:de\s+)?" + _TVA +
         r"(?:\s*intra(?:-?communautaire)?)?", 1.0),
        (_TVA + r"\s*intra(?:-?communautaire)?", 1.0),
        (r"vat\s*(?:reg(?:istration|\.)?\s*)?(?:" + _N + r"|number|id\b|-id)", 1.0),
        (r"btw[-\s]?(?:nummer|nr\.?|id\b|identificatienummer)|ondernemingsnummer", 1.0),
        (r"ust\.?\s*-?\s*id(?:nr\.?)?|steuer\s*-?\s*nr\.?|abn(?![a-z])|tax\s+id", 1.0),
    ),
    "buyer_vat": (
        (r"(?:" + _N + r"\s*)?(?:tva|vat|btw)\s+(?:client|acheteur|klant|afnemer|customer|buyer)",
         1.0),
        (r"(?:votre|your|uw)\s+(?:" + _N + r"\s*)?(?:de\s+)?(?:tva|vat|btw)(?:[-\s]?(?:number|"
         r"nummer|nr\.?|id\b|intra(?:communautaire)?))?", 1.0),
        (r"(?:customer|buyer|client)\s+vat(?:\s+(?:number|no\.?|id))?", 1.0),
    ),
    "iban": ((r"iban", 1.0),),
    "bic": ((r"(?:code\s+)?(?:bic(?:\s*/\s*swift)?|swift(?:\s*/\s*bic)?(?:\s+code)?)", 1.0),),
    "payment_ref": (
        (r"ref(?:erence|\.)?\s+(?:de\s+|du\s+)?(?:paiement|virement|a\s+rappeler|"
         r"a\s+indiquer|avis\s+de\s+paiement)", 1.0),
        (r"(?:libelle|motif)\s+(?:du\s+)?virement", 1.0),
        (r"communication(?:\s+structuree)?", 0.9), (r"payment\s+ref(?:erence|\.)?", 1.0),
        (r"remittance\s+(?:ref(?:erence)?|information)", 1.0),
        (r"please\s+(?:use|quote|mention)\s+(?:the\s+following\s+)?(?:communication|reference)"
         r"(?:\s+(?:for|with|on)\s+your\s+payment)?", 1.0),
        (r"(?:gestructureerde\s+)?mededeling", 0.9), (r"betalings?kenmerk|betaalkenmerk", 1.0),
        (r"verwendungszweck", 1.0), (r"(?:creditor|structured)\s+reference", 1.0),
    ),
    "seller": ((r"vendeur|fournisseur|emetteur|prestataire|seller|supplier|vendor|leverancier|"
                r"verkoper|lieferant|verkaufer|rechnungsersteller|beneficiaire|titulaire(?:\s+du\s+compte)?|"
                r"account\s+holder|payee|rekeninghouder|begunstigde|ten\s+name\s+van|"
                r"t\.\s?n\.\s?v\.?|from(?=\s*:)|(?:make\s+(?:cheques?\s+)?)?payable\s+to|"
                r"pay\s+to|remit\s+to", 0.8),),
    "buyer": (
        (r"factur(?:e|er)\s+a|adresse\s+de\s+facturation|destinataire|acheteur|"
         r"bill(?:ed)?\s+to|invoice(?:d)?\s+to|sold\s+to|factuur\s+aan|gefactureerd\s+aan|"
         r"factuuradres|rechnungsempfanger|adresse\s+du\s+client|vos\s+identifiants|"
         r"kaufer(?:/leistungsempfanger)?|leistungsempfanger", 1.0),
        (r"client|customer|buyer|klant|afnemer|koper|kunde|to(?=\s*:)|aan(?=\s*:)", 0.8),
    ),
    "item": (
        (r"q(?:te|ty|uantite|uantity)\.?|aantal|menge|prix\s+unitaire(?:\s+" + _HT + r")?|"
         r"p\.?\s?u\.?(?:\s+" + _HT + r")?|unit\s+(?:price|cost)|rate|price|prix|"
         r"prijs(?:\s+per\s+stuk)?|eenheidsprijs|stukprijs|einzelpreis|remise|discount|"
         r"korting|rabatt|rabais|escompte|frais\s+de\s+port|shipping|verzendkosten|"
         r"designation|description|omschrijving|libelle|artikel|article|item|beschreibung", 1.0),
    ),
    "other_ref": ((r"gln|duns|ean|gtin|sku|swift\s+code|code\s+routage|lot", 1.0),),
}

_AMOUNT_ROLES = frozenset({"net", "tax", "gross", "due", "deposit"})


def _one_cell(pattern: str) -> str:
    """A label never spans a column gap: its words are one space apart (or none)."""
    return pattern.replace(r"\s+", " ").replace(r"\s*", " ?").replace(r"\s?", " ?")


_COMPILED = tuple(
    (role, re.compile(r"(?<![a-z0-9])(?:" + _one_cell(pattern) +
                      r")(?:(?<![a-z0-9])|(?![a-z]))"), strength)
    for role, entries in _LEXICON.items() for pattern, strength in entries)


@dataclass(frozen=True)
class Hit:
    """A label occurrence: its role, where it is, how strongly it names that role."""

    role: str
    line: int
    start: int
    end: int
    strength: float

    @property
    def amount_role(self) -> bool:
        return self.role in _AMOUNT_ROLES


_MASK = re.compile(r"\S+@\S+|(?:https?://|www\.)\S+")


def find_labels(doc: Doc) -> dict[int, list[Hit]]:
    """Non-overlapping label hits per line, longest match first, then strongest.

    E-mail addresses and URLs are masked first ("seller@seller.com" holds no label)."""
    out: dict[int, list[Hit]] = {}
    for index, line in enumerate(doc.folded):
        if not line.strip():
            continue
        line = _MASK.sub(lambda m: "_" * len(m.group(0)), line)
        raw: list[Hit] = []
        for role, pattern, strength in _COMPILED:
            if pattern.search(line) is None:  # most patterns miss: skip the iterator
                continue
            raw.extend(Hit(role, index, m.start(), m.end(), strength)
                       for m in pattern.finditer(line) if m.end() > m.start())
        raw.sort(key=lambda h: (-(h.end - h.start), -h.strength))
        kept: list[Hit] = []
        for hit in raw:
            if all(hit.end <= k.start or hit.start >= k.end for k in kept):
                kept.append(hit)
        if kept:
            out[index] = sorted(kept, key=lambda h: h.start)
    return out
