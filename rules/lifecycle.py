"""facturd document states mapped to the French e-invoicing lifecycle, in one table.

Job: say, for every facturd state, which lifecycle status ("statut de cycle de vie", sent
as a CDAR message, UN/CEFACT CrossDomainAcknowledgementAndResponse) is the closest, and list
the status codes and the reason codes ("motifs") with readable French and English labels,
so the web pages, the mails and a future platform connector read one table instead of
scattered ifs.

May touch: nothing (data and two look-ups).

Limits and certainty:
- facturd is not a "plateforme agréée" (PA) and transmits nothing to the PPF; the mapping
  is the closest status, for display and for whoever relays statuses later.
- Certain (DGFiP external specifications, the reform's four mandatory statuses):
  200 Déposée, 210 Refusée, 212 Encaissée, 213 Rejetée; 210 and 212 are the buyer's and the
  seller's statuses that reach the tax administration, 210 always with a reason code.
- High confidence (XP Z12-012 annex A, several independent implementations agree): the
  codes and labels 200-214 and 220, which party issues each, and the reason code list
  (BR-FR-CDV-CL-09). The label of 209 varies ("Complétée" in the norm; some tools say
  "Service fait").
- Less certain, verify against the current annex before emitting a status: which reason
  code may go with which status. The 13 refusal (210) codes agree in two sources; the
  columns for 206/207/208 come from one; COORD_BANC_ERR (the exact name for a changed IBAN)
  is listed for 206 and 208 here, not for 210. Codes 221 and above are not used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from rules.model import ACCEPT, BLOCK, DRAFT, HOLD, NO_INVOICE

# -- lifecycle statuses ----------------------------------------------------------------------

PLATFORM = "platform"  # the sender's or the receiver's PA
BUYER = "buyer"
SELLER = "seller"
AGENT = "agent"


@dataclass(frozen=True)
class Status:
    code: int
    fr: str
    en: str
    issued_by: str  # platform | buyer | seller | agent
    mandatory: bool  # one of the four statuses the reform requires


STATUSES: Mapping[int, Status] = MappingProxyType({s.code: s for s in (
    Status(200, "Déposée", "Submitted", PLATFORM, True),
    Status(201, "Émise par la plateforme", "Issued by the platform", PLATFORM, False),
    Status(202, "Reçue par la plateforme", "Received by the platform", PLATFORM, False),
    Status(203, "Mise à disposition", "Made available", PLATFORM, False),
    Status(204, "Prise en charge", "Taken in hand", BUYER, False),
    Status(205, "Approuvée", "Approved", BUYER, False),
    Status(206, "Approuvée partiellement", "Partially approved", BUYER, False),
    Status(207, "En litige", "Disputed", BUYER, False),
    Status(208, "Suspendue", "Suspended", BUYER, False),
    Status(209, "Complétée", "Completed", SELLER, False),
    Status(210, "Refusée", "Refused", BUYER, True),
    Status(211, "Paiement transmis", "Payment sent", BUYER, False),
    Status(212, "Encaissée", "Payment received", SELLER, True),
    Status(213, "Rejetée", "Rejected", PLATFORM, True),
    Status(214, "Visée", "Endorsed", AGENT, False),
    Status(220, "Annulée", "Cancelled", SELLER, False),
)})

# -- reason codes ----------------------------------------------------------------------------

REFUSED, DISPUTED, PARTIAL, SUSPENDED, REJECTED, IRRECEIVABLE = 210, 207, 206, 208, 213, 501


@dataclass(frozen=True)
class Reason:
    code: str
    fr: str
    en: str
    statuses: frozenset[int]  # statuses it may accompany (see the module's certainty note)


def _r(code: str, fr: str, en: str, *statuses: int) -> Reason:
    return Reason(code, fr, en, frozenset(statuses))


REASONS: Mapping[str, Reason] = MappingProxyType({r.code: r for r in (
    # Buyer's reasons (refusal 210, dispute 207, partial approval 206, suspension 208).
    _r("DOUBLON", "Facture en doublon (déjà émise / reçue)",
       "Duplicate invoice (already issued / received)", REFUSED, REJECTED),
    _r("MONTANTTOTAL_ERR", "Montant total erroné", "Wrong total amount", REFUSED, REJECTED),
    _r("CALCUL_ERR", "Erreur de calcul de la facture", "Calculation error in the invoice",
       REFUSED, REJECTED),
    _r("TX_TVA_ERR", "Taux de TVA erroné", "Wrong VAT rate", REFUSED),
    _r("NON_CONFORME", "Mention légale manquante", "Mandatory legal mention missing",
       REFUSED, DISPUTED),
    _r("DEST_ERR", "Erreur de destinataire", "Wrong recipient", REFUSED, DISPUTED),
    _r("TRANSAC_INC", "Transaction inconnue", "Unknown transaction", REFUSED, DISPUTED),
    _r("EMMET_INC", "Émetteur inconnu", "Unknown issuer", REFUSED, DISPUTED),
    _r("CONTRAT_TERM", "Contrat terminé", "Contract ended", REFUSED, DISPUTED),
    _r("DOUBLE_FACT", "Déjà facturé sur une autre facture", "Already invoiced on another "
       "invoice", REFUSED, DISPUTED),
    _r("CMD_ERR", "N° de commande incorrect ou manquant", "Purchase order number wrong or "
       "missing", REFUSED, DISPUTED, PARTIAL, SUSPENDED),
    _r("ADR_ERR", "Adresse de facturation électronique erronée",
       "Wrong electronic invoicing address", REFUSED, REJECTED),
    _r("REF_CT_ABSENT", "Référence contractuelle nécessaire au traitement manquante",
       "Contract reference needed for processing is missing",
       REFUSED, DISPUTED, PARTIAL, SUSPENDED),
    _r("COORD_BANC_ERR", "Erreur de coordonnées bancaires",
       "Bank details do not match the ones on record", PARTIAL, SUSPENDED),
    _r("SIRET_ERR", "SIRET erroné ou absent", "SIRET wrong or missing",
       DISPUTED, PARTIAL, SUSPENDED),
    _r("CODE_ROUTAGE_ERR", "Code routage absent ou erroné", "Routing code missing or wrong",
       DISPUTED, PARTIAL, SUSPENDED),
    _r("REF_ERR", "Référence incorrecte", "Wrong reference", DISPUTED, PARTIAL, SUSPENDED),
    _r("PU_ERR", "Prix unitaires incorrects", "Wrong unit prices", DISPUTED, PARTIAL),
    _r("REM_ERR", "Remise erronée", "Wrong discount", DISPUTED, PARTIAL),
    _r("QTE_ERR", "Quantité facturée incorrecte", "Wrong invoiced quantity", DISPUTED, PARTIAL),
    _r("ART_ERR", "Article facturé incorrect", "Wrong invoiced item", DISPUTED, PARTIAL),
    _r("MODPAI_ERR", "Modalités de paiement incorrectes", "Wrong payment terms",
       DISPUTED, PARTIAL),
    _r("QUALITE_ERR", "Qualité d'article livré incorrecte", "Wrong quality of delivered item",
       DISPUTED, PARTIAL),
    _r("LIVR_INCOMP", "Problème de livraison", "Delivery problem", DISPUTED, PARTIAL),
    _r("JUSTIF_ABS", "Justificatif absent ou insuffisant", "Supporting document missing or "
       "insufficient", SUSPENDED),
    _r("AUTRE", "Autre (à expliquer en note)", "Other (explained in a note)",
       DISPUTED, SUSPENDED),
    # Platforms' reasons (rejection 213, irreceivable 501): a subset, for displaying statuses
    # received from a platform; facturd never issues them. The annex lists more REJ_/IRR_.
    _r("REJ_SEMAN", "Rejet pour erreur sémantique", "Rejected: semantic error", REJECTED),
    _r("REJ_UNI", "Rejet sur contrôle d'unicité", "Rejected: uniqueness check", REJECTED),
    _r("REJ_COH", "Rejet sur contrôle de cohérence des données",
       "Rejected: data consistency check", REJECTED),
    _r("REJ_ADR", "Rejet sur contrôle d'adressage", "Rejected: addressing check", REJECTED),
    _r("IRR_SYNTAX", "Fichier syntaxiquement invalide", "File syntactically invalid",
       IRRECEIVABLE),
)})

# -- facturd states --------------------------------------------------------------------------

PURCHASE_STATES = ("received", "recognized", "pending_approval", "accepted", "rejected",
                   "duplicate", "archived", "paid", "no_invoice", "quarantined")
SALES_STATES = ("draft", "sending", "sent", "paid", "no_invoice", "quarantined")


@dataclass(frozen=True)
class Lifecycle:
    status: int | None  # the closest lifecycle status; None = not part of the lifecycle
    reason: str | None  # the reason code that goes with it, when fixed by the state
    note: str


LIFECYCLE: Mapping[tuple[str, str], Lifecycle] = MappingProxyType({
    ("purchase", "received"): Lifecycle(202, None, "in facturd's mailbox, not read yet"),
    ("purchase", "recognized"): Lifecycle(203, None, "read and available to the company"),
    ("purchase", "pending_approval"): Lifecycle(204, None, "a person decides"),
    ("purchase", "accepted"): Lifecycle(205, None, "accepted for payment"),
    ("purchase", "archived"): Lifecycle(205, None, "accepted and archived"),
    ("purchase", "rejected"): Lifecycle(210, None, "refused by a person, who gives the "
                                        "reason code"),
    ("purchase", "duplicate"): Lifecycle(210, "DOUBLON", "blocked as a duplicate"),
    ("purchase", "paid"): Lifecycle(211, None, "the company sent the payment"),
    ("purchase", "no_invoice"): Lifecycle(None, None, "no invoice in the message"),
    ("purchase", "quarantined"): Lifecycle(None, None, "facturd could not process it: an "
                                           "internal matter, nothing to tell the seller"),
    ("sales", "draft"): Lifecycle(None, None, "not issued yet"),
    ("sales", "sending"): Lifecycle(None, None, "queued for the customer; issued once the "
                                    "mail relay accepts it"),
    ("sales", "sent"): Lifecycle(200, None, "issued to the customer, awaiting payment"),
    ("sales", "paid"): Lifecycle(212, None, "the company received the payment"),
    ("sales", "no_invoice"): Lifecycle(None, None, "no invoice in the message"),
    ("sales", "quarantined"): Lifecycle(None, None, "facturd could not process it"),
})

# The state a document takes after the decision (block is used for duplicates only).
STATE_AFTER: Mapping[str, str] = MappingProxyType({
    ACCEPT: "archived",
    HOLD: "pending_approval",
    BLOCK: "duplicate",
    NO_INVOICE: "no_invoice",
    DRAFT: "draft",
})


def lifecycle_of(direction: str, state: str) -> tuple[Status | None, Reason | None]:
    """The lifecycle status and reason for a document; KeyError for an unknown state."""
    entry = LIFECYCLE[(direction, state)]
    status = STATUSES[entry.status] if entry.status is not None else None
    reason = REASONS[entry.reason] if entry.reason is not None else None
    return status, reason
