"""A user's own catalogue, end to end through the CLI in process: interactions, an item table
and a user table with their own column names and genre separator, through prepare,
generate-labels (a tiny offline embedding teacher), train-student, compress and benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.cli import main
from pipelines.data import load_dataset, make_synthetic
from pipelines.data.synthetic import SyntheticConfig

SMALL = ["--epochs", "2", "--user-hidden", "16", "--item-hidden", "16", "--id-dim", "8", "--out-dim", "8",
         "--history-len", "5", "--n-negatives", "16", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """A shop's export: its own column names, ';'-separated categories, a user table."""
    root = tmp_path_factory.mktemp("shop")
    syn = make_synthetic(SyntheticConfig(users=30, items=40, per_user=8, seed=3))
    inter = syn.interactions
    rows = ["customer,product,stars,when"] + [
        f"c{u},p{j},{r:g},{t}"
        for u, j, r, t in zip(inter.user, inter.item, inter.rating, inter.timestamp)
    ]
    (root / "orders.csv").write_text("\n".join(rows) + "\n")
    items = ["product,name,categories,blurb,released"] + [
        f"p{j},{row.title},{';'.join(row.genres)},{row.text},{int(row.year)}"
        for j, row in enumerate(syn.items.itertuples())
    ]
    (root / "products.csv").write_text("\n".join(items) + "\n")
    rng = np.random.default_rng(0)
    users = ["customer,age,segment"] + [
        f"c{u},{rng.integers(18, 70)},{'MF'[u % 2]}" for u in range(syn.n_users)
    ]
    (root / "customers.csv").write_text("\n".join(users) + "\n")
    flags = [
        "--dataset", str(root / "orders.csv"),
        "--items", str(root / "products.csv"),
        "--users", str(root / "customers.csv"),
        "--columns", "user_id=customer,item_id=product,rating=stars,timestamp=when",
        "--item-columns", "title=name,genres=categories,text=blurb,year=released",  # ids: --columns
        "--user-columns", "gender=segment",
        "--genre-sep", ";",
    ]  # fmt: skip
    return root, flags, syn


def test_own_catalogue_through_every_job(tmp_path, catalogue, tiny_st_dir, capsys):
    root, flags, syn = catalogue
    prep = main(["prepare", *flags, "--protocols", "random", "--out", str(tmp_path / "prep")])
    assert prep["stats"]["users"] == syn.n_users and prep["stats"]["items"] == syn.n_items
    spec = prep["config"]["dataset"]  # the one string every artifact records
    data = load_dataset(spec)
    assert data.items["genres"].map(len).gt(0).all() and data.items["year"].notna().all()
    assert "gender" in data.users and data.users["age"].notna().all()

    labels = tmp_path / "labels"
    meta = main(
        ["generate-labels", *flags, "--model", str(tiny_st_dir), "--n-negatives", "8",
         "--max-positives", "5", "--eval-users", "15", "--eval-negatives", "8",
         "--shard-users", "10", "--threads", "1", "--max-seq-length", "32", "--out", str(labels)]
    )  # fmt: skip
    assert meta["dataset"]["fingerprint"] == data.fingerprint()
    assert meta["config"]["dataset"] == spec

    # the data flags forgotten (all but --dataset and --columns): the error names the spec
    with pytest.raises(SystemExit) as exc:
        main(["train-student", *flags[:2], *flags[6:8], "--labels", str(labels), *SMALL,
              "--out", str(tmp_path / "forgot")])  # fmt: skip
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"labels were made for --dataset {spec!r}" in err and "pass the same data flags" in err

    student = tmp_path / "student"
    res = main(["train-student", *flags, "--labels", str(labels), *SMALL, "--out", str(student)])
    assert res["mode"] == "distilled" and res["dataset"]["fingerprint"] == data.fingerprint()
    config = json.loads((student / "model" / "config.json").read_text())["config"]
    assert config["n_user_features"] > 0 and config["n_item_features"] > 0  # the data has them

    comp = tmp_path / "comp"
    main(["compress", *flags, "--model", str(student / "model"), "--finetune-epochs", "0",
          "--magnitude-sparsity", "0", "--int8", "all", "--threads", "1", "--out", str(comp)])  # fmt: skip
    rep = main(
        ["benchmark", *flags, "--labels", str(labels), "--student-distilled", str(student / "model"),
         "--student-pruned", str(comp / "pruned"), "--student-int8", str(comp / "int8"),
         "--indexes", "flat", "--n-single", "5", "--bootstrap", "20", "--out", str(tmp_path / "b")]
    )  # fmt: skip
    assert {"teacher", "student_distilled", "student_pruned", "student_int8"} <= set(rep["models"])
    assert rep["indexes"]["flat"]["recall@10_vs_exact"] == 1.0


def test_default_student_on_a_csv_without_features(tmp_path):
    """No user table, no genres or years: the student has no features (was a crash)."""
    p = tmp_path / "i.csv"
    rng = np.random.default_rng(1)
    pairs = {(f"u{rng.integers(20)}", f"i{rng.integers(30)}") for _ in range(300)}
    p.write_text("user_id,item_id\n" + "".join(f"{u},{i}\n" for u, i in sorted(pairs)))
    res = main(["train-student", "--dataset", str(p), "--no-teacher", *SMALL,
                "--out", str(tmp_path / "s")])  # fmt: skip
    config = json.loads((tmp_path / "s" / "model" / "config.json").read_text())["config"]
    assert config["n_user_features"] == 0 and config["n_item_features"] == 0
    assert res["valid"]["users"] > 0


def test_dataset_folder_with_the_standard_names(tmp_path, catalogue):
    root, _, syn = catalogue
    folder = tmp_path / "mine"
    folder.mkdir()
    text = (
        (root / "orders.csv")
        .read_text()
        .replace("customer,product,stars,when", "user_id,item_id,rating,timestamp")
    )
    (folder / "interactions.csv").write_text(text)
    items = (
        (root / "products.csv")
        .read_text()
        .replace("product,name,categories,blurb,released", "item_id,title,genres,text,year")
    )
    (folder / "items.csv").write_text(items.replace(";", "|"))
    res = main(
        [
            "prepare",
            "--dataset",
            str(folder),
            "--protocols",
            "temporal",
            "--out",
            str(tmp_path / "p"),
        ]
    )
    assert res["stats"]["items"] == syn.n_items and res["stats"]["name"] == "mine"


def test_movielens_latest_export_with_the_documented_flags(tmp_path):
    """data/README.md's flags for a MovieLens "latest" export: the ids of movies.csv come from
    --columns, years from the titles, "(no genres listed)" is no genre."""
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        + "".join(f"{u},{m},{1 + (u + m) % 5}.0,{1000 + 10 * u + m}\n"
                  for u in range(8) for m in range(30) if (u * m) % 3 != 1)
    )  # fmt: skip
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n0,Toy Story (1995),Animation|Comedy\n1,\"Net, The (1995)\",Action\n"
        "2,Nameless,(no genres listed)\n"
        + "".join(f"{m},Movie {m} ({1950 + m}),{'Drama' if m % 2 else 'Comedy'}\n" for m in range(3, 30))
    )  # fmt: skip
    res = main(
        ["prepare", "--dataset", str(tmp_path / "ratings.csv"), "--items", str(tmp_path / "movies.csv"),
         "--columns", "user_id=userId,item_id=movieId,rating=rating,timestamp=timestamp",
         "--protocols", "temporal", "--out", str(tmp_path / "p")]
    )  # fmt: skip
    data = load_dataset(res["config"]["dataset"])
    assert res["stats"]["items"] == 30 and data.items["year"].notna().sum() == 29
    assert data.items["title"].tolist()[:3] == ["Toy Story", "Net, The", "Nameless"]
    assert data.items["genres"].tolist()[2] == [] and data.items["year"][0] == 1995


def test_relative_data_paths_are_recorded_absolute_with_the_same_fingerprint(
    catalogue, tmp_path, monkeypatch
):
    """A run made with relative --dataset/--items paths names its data absolutely, so a copy of
    the run is served or benchmarked from any working folder; the data's fingerprint is the same
    either way."""
    from pipelines.cli import job_parser, with_dataset_flags

    root = catalogue[0]
    monkeypatch.chdir(root)
    argv = ["--dataset", "orders.csv", "--items", "products.csv", "--columns",
            "user_id=customer,item_id=product,rating=stars,timestamp=when", "--no-teacher"]  # fmt: skip
    parser, _ = job_parser("train-student")
    config = with_dataset_flags(parser, parser.parse_config(argv))
    head, _, query = config.dataset.partition("?")
    assert head == str(root / "orders.csv")
    assert f"items={root / 'products.csv'}" in query.replace("%2F", "/")
    here = load_dataset(config.dataset).fingerprint()
    relative = load_dataset("orders.csv?items=products.csv&columns=user_id=customer,"
                            "item_id=product,rating=stars,timestamp=when").fingerprint()  # fmt: skip
    monkeypatch.chdir(tmp_path)  # another working folder reads the same data
    assert load_dataset(config.dataset).fingerprint() == here == relative
