#!/usr/bin/env python3
"""Writes the demo dataset of config/demo/: the personas of the seed articles
plus a few hundred generated contacts and companies.

Deterministic (fixed seed) so that the README's figures are reproducible.
Every instant is relative to REF, the instant the README's demo runs at.
Run: python3 config/demo/generate.py
"""
import csv
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

REF = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
OUT = Path(__file__).resolve().parent
rng = random.Random(20261120)


def at(days_ago, hour=None):
    t = REF - timedelta(days=days_ago)
    if hour is not None:
        t = t.replace(hour=hour, minute=0, second=0)
    return t.isoformat().replace("+00:00", "Z")


companies = [
    # id, name, headcount, sector, foreign_subsidiaries, expatriates, region
    ("bati-sud", "Bâti Sud", 220, "construction", 3, 12, "Occitanie"),
    ("meca-ouest", "Méca Ouest", 85, "industry", 0, 0, "Bretagne"),
    ("usine-alp", "Usine Alp", 80, "industry", 0, 0, "Auvergne-Rhône-Alpes"),
    ("ferro-nord", "Ferro Nord", 220, "industry", 2, 4, "Hauts-de-France"),
    ("dupont-freres", "Dupont Frères", 60, "industry", 0, 0, "Grand Est"),
    ("dupont-conseil", "Dupont Conseil", 8, "services", 0, 0, "Normandie"),
]
industries = ["industry", "construction", "services", "retail", "public"]
regions = ["Île-de-France", "Occitanie", "Bretagne", "Grand Est", "Normandie", "PACA", "Hauts-de-France"]
for i in range(1, 61):
    headcount = rng.choice([5, 15, 25, 40, 80, 120, 250, 400, 700, 1500])
    companies.append((f"co-{i:03d}", f"Société {i:03d}", headcount, rng.choice(industries),
                      rng.randint(1, 6) if rng.random() < 0.25 else 0,
                      rng.randint(1, 20) if rng.random() < 0.25 else 0, rng.choice(regions)))

with open(OUT / "companies.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "name", "headcount", "sector", "foreign_subsidiaries", "expatriates", "region"])
    for c in companies:
        w.writerow(c)

# id, first, last, email, company, owner, status, tier, timezone, job_title
personas = [
    ("p", "Paul", "Perret", "paul.perret@meca-ouest.fr", "meca-ouest", "claire", "prospect", "target_1", "Europe/Paris", "Responsable RH"),
    ("martino", "Luca", "Martino", "l.martino@bati-sud.fr", "bati-sud", "claire", "prospect", "core", "Europe/Paris", "Directeur RH"),
    ("rajati", "Nadia", "Rajati", "n.rajati@usine-alp.fr", "usine-alp", "hugo", "prospect", "target_1", "Europe/Paris", "DRH"),
    ("beltrani", "Marco", "Beltrani", "m.beltrani@usine-alp.fr", "usine-alp", "hugo", "suspect", "target_2", "Europe/Paris", "Stagiaire comptabilité"),
    ("martin", "Martin", "Lefèvre", "martin.lefevre@ferro-nord.fr", "ferro-nord", "claire", "prospect", "core", "Europe/Paris", "DRH"),
    ("nathalie", "Nathalie", "Roux", "nathalie.roux@ferro-nord.fr", "ferro-nord", "claire", "prospect", "core", "America/New_York", "DRH"),
    ("albert-dupont", "Albert", "Dupont", "a.dupont@dupont-freres.fr", "dupont-freres", "hugo", "prospect", "target_1", "Europe/Paris", "Directeur administratif"),
    ("albert-dupont-2", "Albert", "Dupont", "albert@dupont-conseil.fr", "dupont-conseil", "hugo", "suspect", "target_2", "Europe/Paris", "Gérant"),
]
first = ["Camille", "Léa", "Hugo", "Louis", "Chloé", "Inès", "Jules", "Emma", "Lucas", "Manon", "Nina", "Théo", "Sarah", "Adam", "Zoé"]
last = ["Bernard", "Petit", "Durand", "Moreau", "Laurent", "Simon", "Michel", "Garcia", "David", "Bertrand", "Fontaine", "Chevalier"]
titles = ["DRH", "Responsable RH", "Responsable paie", "DAF", "Stagiaire RH", "Assistant RH", "Directeur général", "Comptable"]
zones = ["Europe/Paris"] * 6 + ["Europe/Brussels", "America/New_York", "America/Montreal"]
contacts = list(personas)
generated = []
for i in range(1, 321):
    co = rng.choice(companies[7:])
    fn, ln = rng.choice(first), rng.choice(last)
    cid = f"c-{i:04d}"
    status = rng.choices(["suspect", "prospect", "customer"], [5, 4, 1])[0]
    contacts.append((cid, fn, ln, f"{fn.lower()}.{ln.lower()}.{i}@{co[0]}.example", co[0],
                     rng.choice(["claire", "hugo", "samir"]), status, rng.choice(["core", "target_1", "target_2"]),
                     rng.choice(zones), rng.choice(titles)))
    generated.append((cid, status))

with open(OUT / "contacts.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "first_name", "last_name", "email", "phone", "company", "owner", "status", "tier", "timezone",
                "consent_sms", "title"])
    for n, c in enumerate(contacts):
        phone = f"+33 1 {40 + n % 50:02d} {n % 100:02d} {(n * 7) % 100:02d} {(n * 13) % 100:02d}"
        w.writerow([c[0], c[1], c[2], c[3], phone, c[4], c[5], c[6], c[7], c[8],
                    "true" if n % 3 == 0 else "", c[9]])

events = []


def ev(contact, kind, days_ago, channel=None, hour=None, **props):
    e = {"contact": contact, "type": kind, "at": at(days_ago, hour)}
    if channel:
        e["channel"] = channel
    if props:
        e["props"] = props
    events.append(e)


# P: fatigue 12 at REF (sms 7 three days ago; call 5 and email 3 a day ago).
ev("p", "sms_sent", 3, "sms")
ev("p", "call", 1, "phone", outcome="PISTE")
ev("p", "email_sent", 1, "email")
def hours(h):
    return h / 24


# Martino: hot (215) — profile 120, behaviour 95.
for d, kind, props in [(3, "demo_request", {}), (5, "download", {"asset": "livre-blanc-paie"}),
                       (4, "page_visit", {"url": "https://payroll.example/pricing"}),
                       (hours(6), "page_visit", {"url": "https://payroll.example/blog/expatriates"}),
                       (hours(2), "email_click", {"url": "https://payroll.example/paie-internationale"}),
                       (hours(3), "email_open", {}), (hours(4), "email_open", {}), (hours(5), "email_open", {})]:
    ev("martino", kind, d, "email" if kind.startswith("email") else None, **props)
# Rajati: warm (140).
for d, kind in [(20, "trade_show_visit"), (12, "form_submit"), (hours(1), "email_click")]:
    ev("rajati", kind, d, "email" if kind.startswith("email") else None)
# Beltrani: cold (30): an intern, with a careers-page visit.
ev("beltrani", "download", 2)
ev("beltrani", "page_visit", 1, url="https://payroll.example/careers/dev")
for h in range(1, 6):
    ev("beltrani", "email_open", hours(h), "email")
# Martin and Nathalie: the same actions (250); Nathalie's are three months old (235).
for who, age in [("martin", 8), ("nathalie", 95)]:
    ev(who, "demo_request", age)
    ev(who, "download", age + 1)
    ev(who, "download", age + 2)
    ev(who, "page_visit", age + 1, url="https://payroll.example/pricing")
    ev(who, "page_visit", age + 2, url="https://payroll.example/tarifs")
# Deal stages.
ev("martino", "deal_stage", 1, deal="deal-bati", stage="director_loves_proposal")
ev("rajati", "deal_stage", 2, deal="deal-usine", stage="purchasing_halves_budget")
# Albert Dupont: called often, never reached; his homonym was never called.
for d, outcome in [(60, "NRP"), (45, "OCC"), (30, "NRP"), (12, "RAPP")]:
    ev("albert-dupont", "call", d, "phone", hour=10, outcome=outcome)
ev("albert-dupont", "email_sent", 11, "email")

kinds = [("email_open", 30), ("email_click", 10), ("page_visit", 25), ("download", 5), ("form_submit", 3),
         ("webinar_signup", 2), ("email_sent", 15), ("call", 5), ("unsubscribe", 1), ("complaint", 0.5), ("bounce", 0.5)]
pages = ["/pricing", "/demo", "/blog/paie", "/careers", "/produit"]
for cid, status in generated:
    for _ in range(rng.randint(0, 18)):
        kind = rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
        days = rng.randint(0, 200)
        props = {}
        channel = None
        if kind == "page_visit":
            props["url"] = rng.choice(pages)
        elif kind == "call":
            props["outcome"] = rng.choice(["NRP", "OCC", "RAPP", "PISTE", "REFUS", "RDV", "PROJET"])
            channel = "phone"
        elif kind in ("email_sent", "email_open", "email_click"):
            channel = "email"
        ev(cid, kind, days, channel, **props)
    if status == "customer":
        for _ in range(rng.randint(1, 6)):
            ev(cid, "purchase", rng.randint(0, 400), amount=rng.choice([450, 900, 1800, 3600, 12000]))

# Business signals on companies.
for co, kind, d in [("bati-sud", "new_sites", 10), ("co-012", "international", 30), ("co-007", "difficulty", 20)]:
    events.append({"company": co, "type": "business_signal", "at": at(d), "props": {"kind": kind}})

events.sort(key=lambda e: e["at"])
with open(OUT / "events.jsonl", "w") as f:
    for n, e in enumerate(events):
        e = {"id": f"demo-{n:05d}", **e} if "contact" in e else e
        f.write(json.dumps(e, ensure_ascii=False) + "\n")

deals = [("deal-bati", "Paie multi-pays", "martino", "bati-sud", 48000, "proposal", "core", "referral"),
         ("deal-ferro", "Paie expatriés", "martin", "ferro-nord", 30000, "qualification", "core", ""),
         ("deal-usine", "Module congés", "rajati", "usine-alp", 9000, "proposal", "target_1", "customer")]
for i in range(1, 41):
    cid, _ = rng.choice(generated)
    deals.append((f"deal-{i:03d}", f"Projet {i:03d}", cid, "", rng.choice([3000, 8000, 15000, 25000, 60000]),
                  rng.choice(["qualification", "proposal", "negotiation"]), rng.choice(["core", "target_1", "target_2"]),
                  rng.choice(["", "", "customer", "referral"])))
with open(OUT / "deals.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "name", "contact", "company", "amount", "stage", "segment", "source"])
    w.writerows(deals)
print(f"{len(companies)} companies, {len(contacts)} contacts, {len(deals)} deals, {len(events)} events")
