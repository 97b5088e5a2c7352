"""Model features from the catalog cards (autoroute.model_features)."""
import math

import pandas as pd

from autoroute.catalog import Catalog
from autoroute.config import load_config
from autoroute.model_features import model_features, release_year


def _catalog():
    return Catalog.from_config(load_config().catalog)


def test_every_offered_model_has_features_and_says_what_they_rest_on():
    cat = _catalog()
    feats, sources = model_features(cat, cat.offered)
    assert list(feats.index) == list(cat.offered)
    assert sources["gpt-5.2"] == "family_prior"            # no rating of its own: its family's
    assert sources["claude-haiku-4.5"] == "measured_prior"
    assert feats.loc["gpt-5.2", "provider=openai"] == 1 and feats.loc["gpt-5.2", "has_price"] == 0
    assert feats.loc["claude-opus-4.5", "prior_logit/coding"] > feats.loc["gpt-4o-mini", "prior_logit/coding"]
    assert math.isnan(feats.loc["gpt-5.2", "log_price_out"])


def test_rated_models_without_card_priors_get_measured_priors_from_the_ratings():
    cat = _catalog()
    ratings = pd.DataFrame({"model": ["gpt-4-1106-preview", "claude-2"] * 2, "category": ["coding"] * 2 + ["full"] * 2,
                            "rating": [1250.0, 1150.0, 1250.0, 1130.0], "q025": [1245.0, 1140.0, 1245.0, 1120.0],
                            "q975": [1255.0, 1160.0, 1255.0, 1140.0]})
    feats, sources = model_features(cat, ["claude-2", "mixtral-8x7b-instruct", "not-a-model"], ratings,
                                    "gpt-4-1106-preview")
    assert list(feats.index) == ["claude-2", "mixtral-8x7b-instruct"]     # no card: no row
    assert sources == {"claude-2": "measured_prior"}
    assert feats.loc["claude-2", "prior_logit/coding"] < 0                  # 100 points below the reference
    assert math.isnan(feats.loc["mixtral-8x7b-instruct", "prior_logit/coding"])


def test_release_year_from_dated_names():
    cat = _catalog()
    assert release_year(cat.cards["claude-opus-4.5"]) == 2025 + 10 / 12
    assert math.isnan(release_year(cat.cards["gpt-5.2"]))
