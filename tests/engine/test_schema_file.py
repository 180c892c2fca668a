import json
from pathlib import Path

from parallelrun.config import json_schema


def test_published_schema_matches_the_code() -> None:
    published = Path(__file__).resolve().parents[2] / "src" / "parallelrun" / "schema" / "job.schema.json"
    assert json.loads(published.read_text()) == json_schema(), "regenerate: parallelrun schema > " + str(published)
