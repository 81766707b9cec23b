"""The staff search benchmark: `python -m bench.search [--messages 1000000] [--reseed] [--runs 5]`.

It seeds its own database, `chat_bench_search` (never `chat_bench`, which the relay benchmark
drops and recreates), with a million messages of English-like text through generate_series,
then opens the admin's conversation list with a search, as a superuser, through Django's test
client against that database, and captures the queries the page runs. Each query that
searches (the page's rows and its count) is timed with EXPLAIN ANALYZE with the trigram
indexes and, in a transaction rolled back afterwards, without them. The seed is kept between
runs (`--reseed` makes it again) and built with the indexes dropped, then recreated, which
also measures what migration 0008_review_audit_search costs on a table of that size.

Postgres must run (`BENCH_PG_URL`, default postgres://postgres@127.0.0.1:5432/postgres).
`seed_statements` is shared with tests/test_admin_search.py (100,000 messages).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

SEARCH_DB = "chat_bench_search"
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
LIST = "/admin/conversations/conversation/"
NEEDLE = "marmalade"  # not in the vocabulary: only in the messages it is planted in
TRIGRAM_INDEXES = ("msg_content_trgm", "conv_title_trgm")

# Common English words; sentences of twelve of them make the messages.
VOCABULARY = """
the be to of and a in that have it for not on with he as you do at this but his by from they we say her
she or an will my one all would there their what so up out if about who get which go me when make can
like time no just him know take people into year your good some could them see other than then now look
only come its over think also back after use two how our work first well way even new want because any
these give day most us is are was were been has had did said each tell does set three own point ask house
while world found still learn plant cover food sun four between state keep eye never last let thought city
tree cross farm hard start might story saw far sea draw left late run press close night real life few north
open seem together next white children begin got walk example ease paper group always music those both mark
often letter until mile river car feet care second book carry took science eat room friend began idea fish
mountain stop once base hear horse cut sure watch color face wood main enough plain girl usual young ready
above ever red list though feel talk bird soon body dog family direct pose leave song measure door product
black short numeral class wind question happen complete ship area half rock order fire south problem piece
told knew pass since top whole king space heard best hour better true during hundred five remember step
early hold west ground interest reach fast verb sing listen six table travel less morning ten simple several
vowel toward war lay against pattern slow center love person money serve appear road map rain rule govern
pull cold notice voice unit power town fine certain fly fall lead cry dark machine note wait plan figure star
box noun field rest correct able pound done beauty drive stood contain front teach week final gave green
quick develop ocean warm free minute strong special mind behind clear tail produce fact street inch multiply
nothing course stay wheel full force blue object decide surface deep moon island foot system busy test record
boat common gold possible plane dry wonder laugh thousand ago ran check game shape hot miss brought heat snow
tire bring yes distant fill east paint language among budget report numbers quarter sales plan review
""".split()


def seed_statements(owner_id: int, conversations: int, messages: int, needle_every: int) -> list[tuple]:
    """SQL that fills conversations and messages: a user message is one twelve-word sentence, a
    reply three; every `needle_every`-th message ends with "the marmalade budget"."""
    return [
        ("CREATE TEMP TABLE seed_words AS SELECT %s::text[] AS w", [VOCABULARY]),
        ("""CREATE TEMP TABLE seed_sentences AS
            SELECT k, (SELECT string_agg(w[1 + abs(hashint4(k * 131 + j)) %% array_length(w, 1)], ' ')
                       FROM seed_words, generate_series(1, 12) AS j) AS s
            FROM generate_series(0, 1999) AS k""", []),
        ("""INSERT INTO conversations_conversation (id, owner_id, title, title_source, model, system_prompt,
                                                   params, created_at, updated_at)
            SELECT md5('c' || i)::uuid, %s, left(t.s, 48), 'first_words', 'fake-model', '', '{}',
                   now() - i * interval '1 minute', now() - i * interval '1 minute'
            FROM generate_series(1, %s) AS i JOIN seed_sentences t ON t.k = (i * 17) %% 2000""",
         [owner_id, conversations]),
        ("""INSERT INTO conversations_message (id, conversation_id, role, content, reasoning, status, model,
                                              finish_reason, error_code, created_at, updated_at)
            SELECT md5('m' || i)::uuid, md5('c' || (abs(hashint4(i)) %% %s + 1))::uuid,
                   CASE WHEN i %% 2 = 0 THEN 'user' ELSE 'assistant' END,
                   CASE WHEN i %% 2 = 0 THEN a.s ELSE a.s || '. ' || b.s || '. ' || c.s END
                       || CASE WHEN i %% %s = 0 THEN ' the ' || %s || ' budget' ELSE '' END,
                   '', 'complete', '', '', '', now() - (%s - i) * interval '1 second',
                   now() - (%s - i) * interval '1 second'
            FROM generate_series(1, %s) AS i
            JOIN seed_sentences a ON a.k = i %% 2000
            JOIN seed_sentences b ON b.k = (i * 7) %% 2000
            JOIN seed_sentences c ON c.k = (i * 13) %% 2000""",
         [conversations, needle_every, NEEDLE, messages, messages, messages]),
        ("DROP TABLE seed_words, seed_sentences", []),
    ]


def database_url(name: str) -> str:
    parts = urlsplit(PG_ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


def set_up_django() -> None:
    """Django on the benchmark's own database (created if missing), migrated."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [SEARCH_DB]).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SEARCH_DB)))
    os.environ.update(
        DATABASE_URL=database_url(SEARCH_DB), DJANGO_SETTINGS_MODULE="chatsite.settings",
        SECRET_KEY="bench-only-secret-key-for-the-search-benchmark", DEBUG="false",
        ALLOWED_HOSTS="testserver", LOG_LEVEL="WARNING",
    )
    os.environ.pop("REDIS_URL", None)
    import django
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    warnings.filterwarnings("ignore", "No directory at", UserWarning)  # no collectstatic here
    django.setup()
    setup_test_environment()  # the test client then hands back each page's context
    call_command("migrate", verbosity=0)


def seed(conversations: int, messages: int, needle_every: int) -> dict:
    """Empty the tables and fill them; the trigram indexes are dropped for the load and rebuilt."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    timings = {}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY(%s)",
                       [list(TRIGRAM_INDEXES)])
        definitions = dict(cursor.fetchall())
        assert set(definitions) == set(TRIGRAM_INDEXES), f"migration 0008_review_audit_search is not applied: {definitions}"
        cursor.execute("TRUNCATE conversations_usage, conversations_message, conversations_conversation")
        for name in TRIGRAM_INDEXES:
            cursor.execute(f"DROP INDEX {name}")
        get_user_model().objects.filter(username="bench-reviewer").delete()
        owner = get_user_model().objects.create_superuser("bench-reviewer", password="bench-reviewer-pw")
        started = time.perf_counter()
        for statement, params in seed_statements(owner.pk, conversations, messages, needle_every):
            cursor.execute(statement, params)
        timings["seed_s"] = time.perf_counter() - started
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the foreign keys, checked now
        for name in TRIGRAM_INDEXES:
            started = time.perf_counter()
            cursor.execute(definitions[name])
            timings[f"build_{name}_s"] = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE conversations_message")
        cursor.execute("VACUUM ANALYZE conversations_conversation")
    return timings


def sizes() -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("""SELECT (SELECT count(*) FROM conversations_message),
                                  (SELECT count(*) FROM conversations_conversation),
                                  pg_relation_size('conversations_message'),
                                  pg_relation_size('msg_content_trgm'),
                                  (SELECT avg(length(content)) FROM conversations_message)""")
        messages, conversations, heap, index, average = cursor.fetchone()
    return {"messages": messages, "conversations": conversations, "heap_mb": heap / 2**20,
            "index_mb": index / 2**20, "average_chars": float(average or 0)}


def explain(cursor, query: str, runs: int) -> tuple[float, str]:
    """Median execution time (ms) of `runs` EXPLAIN ANALYZE after one warm-up, and how the
    messages table was read."""
    times, plan = [], None
    for _ in range(runs + 1):
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query)
        result = cursor.fetchone()[0]
        result = json.loads(result) if isinstance(result, str) else result
        plan = result[0]
        times.append(plan["Execution Time"])
    return statistics.median(times[1:]), message_access(plan["Plan"])


def message_access(node: dict) -> str:
    """How a plan reads conversations_message: the index it uses, or a sequential scan."""
    found = []

    def walk(n):
        if n.get("Relation Name") == "conversations_message" and n["Node Type"] == "Seq Scan":
            found.append("Seq Scan")
        if n.get("Index Name") in TRIGRAM_INDEXES:
            found.append(f"{n['Node Type']} on {n['Index Name']}")
        for child in n.get("Plans", []):
            walk(child)

    walk(node)
    return ", ".join(dict.fromkeys(found)) or "—"


def measure(terms: list[str], runs: int) -> list[dict]:
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench-reviewer"))
    rows = []
    for term in terms:
        pages = []
        for _ in range(runs + 1):
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                page = client.get(LIST, {"q": term})
                pages.append((time.perf_counter() - started) * 1000)
            assert page.status_code == 200, page.status_code
        found = page.context["cl"].result_count
        searching = [q["sql"] for q in captured if "LIKE" in q["sql"]]
        assert searching, "the page ran no search"
        for query in searching:
            kind = "count" if query.lstrip().upper().startswith("SELECT COUNT") else "page rows"
            with connection.cursor() as cursor:
                with_index = explain(cursor, query, runs)
                with transaction.atomic():
                    for name in TRIGRAM_INDEXES:
                        cursor.execute(f"DROP INDEX {name}")
                    without_index = explain(cursor, query, runs)
                    transaction.set_rollback(True)
            rows.append({"term": term, "query": kind, "found": found, "with_ms": with_index[0],
                         "with_plan": with_index[1], "without_ms": without_index[0],
                         "without_plan": without_index[1], "page_ms": statistics.median(pages[1:])})
    return rows


def plain_list(runs: int) -> float:
    """Median time (ms) of the conversation list with no search: the counts and statuses of a page."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench-reviewer"))
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        assert client.get(LIST).status_code == 200
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times[1:])


def table(rows: list[dict]) -> str:
    lines = ["| search | query | conversations found | with the index | without | faster | "
             "whole page, with the index |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| `{r['term']}` | {r['query']} | {r['found']:,} | {r['with_ms']:,.1f} ms ({r['with_plan']}) | "
            f"{r['without_ms']:,.1f} ms ({r['without_plan']}) | ×{r['without_ms'] / max(r['with_ms'], 0.001):,.0f} | "
            f"{r['page_ms']:,.0f} ms |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--conversations", type=int, default=50_000)
    parser.add_argument("--needle-every", type=int, default=10_000, help="one message in N holds the rare word")
    parser.add_argument("--reseed", action="store_true", help="seed again even if the table has the rows")
    parser.add_argument("--runs", type=int, default=5, help="EXPLAIN ANALYZE runs per query (median)")
    parser.add_argument("--terms", default=f"{NEEDLE},river,river boat,ab",
                        help="comma-separated searches (a rare word, a common one, two words, two letters)")
    args = parser.parse_args(argv)
    set_up_django()
    timings = {}
    if args.reseed or sizes()["messages"] != args.messages:
        print(f"seeding {args.messages:,} messages in {args.conversations:,} conversations…", file=sys.stderr)
        timings = seed(args.conversations, args.messages, args.needle_every)
    facts = sizes()
    import django
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    print(f"Command: `python -m bench.search {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip())
    print(f"Database {SEARCH_DB}: {facts['messages']:,} messages ({facts['average_chars']:.0f} characters on "
          f"average, {facts['heap_mb']:,.0f} MB) in {facts['conversations']:,} conversations; the trigram index "
          f"on messages is {facts['index_mb']:,.0f} MB. Postgres {version.split()[0]}, Django {django.get_version()}, "
          f"{os.cpu_count()} cores.")
    if timings:
        print("Seeded in {seed_s:.0f} s; building msg_content_trgm took {build_msg_content_trgm_s:.0f} s and "
              "conv_title_trgm {build_conv_title_trgm_s:.1f} s.".format(**timings))
    print(f"Median of {args.runs} EXPLAIN ANALYZE runs after a warm-up; the page is the admin's list with "
          "the search, through Django's test client, as a superuser.\n")
    print(table(measure([t.strip() for t in args.terms.split(",") if t.strip()], args.runs)))
    print(f"\nThe list with no search (50 rows with their counts, tokens and status): {plain_list(args.runs):,.0f} ms.")


if __name__ == "__main__":
    main()
