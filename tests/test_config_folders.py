"""label_configs/<type>/ folders: the loader's checks (each error with its file and line) and, against a real
Label Studio 1.23.2, every shipped folder as a project: config, guideline, sample tasks, a prediction and
annotations read back, and crowdgate's similarity on what Label Studio returns."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from label_studio_sdk.label_interface import LabelInterface

from core.config_folder import (
    FILES,
    ConfigFolder,
    ConfigFolderError,
    folder_paths,
    guideline_version,
    load_tasks_file,
)
from core.label_config import LabelConfig
from qa_hooks.similarity import compare_results
from routing.policy import parse_policy
from scripts.seed import LABEL_CONFIGS, Seeder, config_folder, label_config

FOLDERS = folder_paths(LABEL_CONFIGS)
TYPES = {"text_classification", "multi_label", "sentiment_rating", "ner", "rlhf_pairwise", "chat_rating",
         "image_bbox", "transcription", "content_moderation", "rte", "image_polygon", "taxonomy", "text_summary",
         "pairwise"}


def test_every_task_type_has_a_folder_with_every_file() -> None:
    assert {p.name for p in FOLDERS} == TYPES
    for path in FOLDERS:
        assert [name for name in FILES if not (path / name).is_file()] == [], path.name


def test_the_catalogue_lists_every_folder() -> None:
    catalogue = (LABEL_CONFIGS / "README.md").read_text()
    assert [p.name for p in FOLDERS if f"| `{p.name}/` |" not in catalogue] == []


@pytest.mark.parametrize("path", FOLDERS, ids=lambda p: p.name)
def test_shipped_folder_loads_and_its_gold_scores_itself(path: Path) -> None:
    folder = ConfigFolder.load(path, check_policy=parse_policy)
    assert folder.name == path.name and folder.label_config == label_config(path.name)
    assert folder.config is LabelConfig.parse(folder.label_config)
    assert folder.guideline_version.isdigit()
    assert f"Guideline version {folder.guideline_version}." in folder.guideline_html
    assert folder.sample_tasks and folder.gold
    for task in folder.sample_tasks:
        assert set(task["data"]) >= {o.data_key for o in folder.config.objects if o.data_key}
    for item in folder.gold:
        assert compare_results(item.answer, copy.deepcopy(item.answer), folder.config) == 1.0
        assert compare_results(item.answer, different(item.answer, folder.config), folder.config) < 1.0
    policy = parse_policy(folder.policy_text)
    assert 0 < policy.gold_share < 1 and policy.overlap.min <= policy.overlap.max
    assert policy.fraud.enabled and policy.fraud.review_at <= policy.fraud.pause_at


def test_scripts_seed_loads_a_folder_with_the_policy_parser() -> None:
    folder = config_folder("rte")
    assert folder.path == LABEL_CONFIGS / "rte" and folder.config.control("entailment").labels == ("1", "0")
    # RTE's samples and gold are real items of the shipped crowd set, gold answers its expert labels.
    items = {r["item"]: r for r in map(json.loads, (LABEL_CONFIGS.parent / "data/crowd/rte.items.jsonl").open())}
    for gold in folder.gold:
        assert gold.answer[0]["value"]["choices"] == [items[gold.data["item"]]["gold"]]


# -- the loader's errors ----------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A writable copy of the shipped text_classification folder."""
    return Path(shutil.copytree(LABEL_CONFIGS / "text_classification", tmp_path / "text_classification"))


def failure(path: Path, **kwargs: Any) -> ConfigFolderError:
    with pytest.raises(ConfigFolderError) as caught:
        ConfigFolder.load(path, **kwargs)
    return caught.value


def replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def test_error_reads_file_line_problem(folder: Path) -> None:
    error = ConfigFolderError(folder / "gold.jsonl", 3, "something is wrong")
    assert str(error) == f"{folder / 'gold.jsonl'}:3: something is wrong"
    assert (error.path, error.line, error.problem) == (folder / "gold.jsonl", 3, "something is wrong")


@pytest.mark.parametrize("name", FILES)
def test_a_missing_file_is_named(folder: Path, name: str) -> None:
    (folder / name).unlink()
    error = failure(folder)
    assert (error.path, error.line, error.problem) == (folder / name, 0, "file missing")


def test_not_a_folder(tmp_path: Path) -> None:
    assert "not a config folder" in failure(tmp_path / "nothing").problem


def test_xml_that_does_not_parse_gives_the_parsers_line(folder: Path) -> None:
    xml = (folder / "config.xml").read_text().replace('<Choice value="Neutral"/>', '<Choice value="Neutral">')
    (folder / "config.xml").write_text(xml)
    error = failure(folder)
    assert error.path == folder / "config.xml" and error.line == 8  # the parser stops at </Choices>
    assert "XML does not parse" in error.problem and "mismatched tag" in error.problem


def test_control_pointing_at_no_object_gives_its_line(folder: Path) -> None:
    xml = (folder / "config.xml").read_text().replace('toName="text"', 'toName="body"')
    (folder / "config.xml").write_text(xml)
    error = failure(folder)
    assert (error.path, error.line) == (folder / "config.xml", 4)
    assert "control 'sentiment' points at ['body']" in error.problem


def test_a_second_tag_of_the_same_name_gives_its_line(folder: Path) -> None:
    xml = (folder / "config.xml").read_text().replace(
        "</Choices>", '</Choices>\n  <Choices name="sentiment" toName="text"><Choice value="Mixed"/></Choices>')
    (folder / "config.xml").write_text(xml)
    error = failure(folder)
    assert (error.path, error.line) == (folder / "config.xml", 9) and "'sentiment'" in error.problem


def test_guideline_without_a_version(folder: Path) -> None:
    html = (folder / "guideline.html").read_text()
    (folder / "guideline.html").write_text(html.replace('class="guideline-version"', 'class="intro"'))
    error = failure(folder)
    assert (error.path, error.line) == (folder / "guideline.html", 1) and "guideline-version" in error.problem
    (folder / "guideline.html").write_text('<h2>Rules</h2>\n<p class="note guideline-version">Version three</p>\n')
    assert (failure(folder).line, "'Version three'" in failure(folder).problem) == (2, True)


def test_guideline_version_is_read_from_its_element() -> None:
    assert guideline_version('<p class="guideline-version">Guideline <b>version 4.1</b>, May</p>') == "4.1"
    assert guideline_version("<p>Guideline version 4</p>") is None  # only the marked element counts
    assert guideline_version("") is None


def test_tasks_line_that_is_not_json(folder: Path) -> None:
    replace_line(folder / "tasks.jsonl", 3, '{"data": {"text": "unterminated}')
    error = failure(folder)
    assert (error.path, error.line) == (folder / "tasks.jsonl", 3) and error.problem.startswith("not JSON")


def test_tasks_line_lacking_a_field_the_config_reads(folder: Path) -> None:
    replace_line(folder / "tasks.jsonl", 2, '{"data": {"body": "a field the config does not read"}}')
    error = failure(folder)
    assert (error.path, error.line) == (folder / "tasks.jsonl", 2)
    assert "lacks 'text'" in error.problem and "$text" in error.problem


def test_gold_answer_naming_a_control_the_config_lacks(folder: Path) -> None:
    bad = {"data": {"text": "x"}, "answer": [{"from_name": "mood", "to_name": "text", "type": "choices",
                                              "value": {"choices": ["Positive"]}}]}
    replace_line(folder / "gold.jsonl", 2, json.dumps(bad))
    error = failure(folder)
    assert (error.path, error.line) == (folder / "gold.jsonl", 2)
    assert "control 'mood'" in error.problem and "sentiment" in error.problem


def test_gold_answer_naming_a_label_the_control_lacks(folder: Path) -> None:
    bad = {"data": {"text": "x"}, "answer": [{"from_name": "sentiment", "to_name": "text", "type": "choices",
                                              "value": {"choices": ["Ecstatic"]}}]}
    replace_line(folder / "gold.jsonl", 3, json.dumps(bad))
    error = failure(folder)
    assert (error.path, error.line) == (folder / "gold.jsonl", 3) and "'Ecstatic'" in error.problem


@pytest.mark.parametrize(("region", "words"), [
    ({"from_name": "sentiment", "to_name": "title", "type": "choices", "value": {"choices": ["Positive"]}},
     "to_name 'title'"),
    ({"from_name": "sentiment", "to_name": "text", "type": "labels", "value": {"choices": ["Positive"]}},
     "type 'labels'"),
    ({"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": []}}, "non-empty list"),
])
def test_gold_answer_of_the_wrong_shape(folder: Path, region: dict[str, Any], words: str) -> None:
    replace_line(folder / "gold.jsonl", 1, json.dumps({"data": {"text": "x"}, "answer": [region]}))
    error = failure(folder)
    assert (error.path, error.line) == (folder / "gold.jsonl", 1) and words in error.problem


def test_gold_item_without_an_answer(folder: Path) -> None:
    replace_line(folder / "gold.jsonl", 2, '{"data": {"text": "x"}}')
    error = failure(folder)
    assert (error.line, '"answer"' in error.problem) == (2, True)


def test_policy_that_is_not_yaml_gives_its_line(folder: Path) -> None:
    text = (folder / "policy.yaml").read_text().replace("  share: 0.1", "  share: [0.1")
    (folder / "policy.yaml").write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "share: [0.1" in t)
    error = failure(folder)
    assert error.path == folder / "policy.yaml" and error.line in (line, line + 1)
    assert "YAML does not parse" in error.problem


def test_policy_the_parser_refuses_gives_the_line_of_its_key(folder: Path) -> None:
    text = (folder / "policy.yaml").read_text()
    text = text.replace("promote: {min_gold: 30, min_lower: 0.85}", "promote: {min_gold: many, min_lower: 0.85}")
    (folder / "policy.yaml").write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "min_gold: many" in t)
    assert ConfigFolder.load(folder).policy_text == text  # without the parser only the YAML is checked
    error = failure(folder, check_policy=parse_policy)
    assert (error.path, error.line) == (folder / "policy.yaml", line)
    assert "tiers[2].promote.min_gold" in error.problem and "'many'" in error.problem


def test_policy_unknown_key_points_at_it(folder: Path) -> None:
    text = (folder / "policy.yaml").read_text() + "overlapp:\n  min: 2\n"
    (folder / "policy.yaml").write_text(text)
    error = failure(folder, check_policy=parse_policy)
    assert error.line == len(text.splitlines()) - 1 and "overlapp: unknown key" in error.problem


# -- tasks files for seeding ------------------------------------------------------------------------------

RTE = LabelConfig.parse(label_config("rte"))


def test_tasks_file_in_jsonl_json_and_csv(tmp_path: Path) -> None:
    rows = [{"text": "A dog barks.", "hypothesis": "An animal makes a sound."},
            {"text": "It rained, 3 mm.", "hypothesis": "It was dry."}]
    (tmp_path / "t.jsonl").write_text(json.dumps({"data": rows[0], "meta": {"src": "a"}}) + "\n\n"
                                      + json.dumps(rows[1]) + "\n")
    (tmp_path / "t.json").write_text(json.dumps(rows, indent=2))
    (tmp_path / "t.csv").write_text('text,hypothesis\nA dog barks.,An animal makes a sound.\n'
                                    '"It rained, 3 mm.",It was dry.\n')
    expected = [{"data": r} for r in rows]
    assert load_tasks_file(tmp_path / "t.jsonl", RTE) == [{**expected[0], "meta": {"src": "a"}}, expected[1]]
    assert load_tasks_file(tmp_path / "t.json", RTE) == expected
    assert load_tasks_file(tmp_path / "t.csv", RTE) == expected


def test_json_tasks_file_errors_carry_the_line_of_the_task(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('[\n  {"text": "a", "hypothesis": "b"},\n  {"text": "a"},\n  {"text": "c", "hypothesis": "d"}\n]')
    error = load_error(path)
    assert (error.line, "lacks 'hypothesis'" in error.problem) == (3, True)
    path.write_text('[\n  {"text": "a", "hypothesis": "b"},\n  {"text": "a" "hypothesis": "b"}\n]')
    assert (load_error(path).line, load_error(path).problem.startswith("not JSON")) == (3, True)
    path.write_text('{"text": "a", "hypothesis": "b"}')
    assert "one list" in load_error(path).problem


def test_csv_tasks_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,premise\nA dog barks.,An animal\n")
    error = load_error(path)
    assert (str(error).startswith(f"{path}:2: "), "lacks 'hypothesis'" in error.problem) == (True, True)
    path.write_text("text,hypothesis\na,b\nc,d,e\n")
    assert load_error(path).line == 3 and "more values" in load_error(path).problem


def test_tasks_file_of_an_unknown_kind_or_empty(tmp_path: Path) -> None:
    (tmp_path / "t.xlsx").write_text("x")
    assert "unknown tasks file type" in load_error(tmp_path / "t.xlsx").problem
    (tmp_path / "t.jsonl").write_text("\n")
    assert "no tasks" in load_error(tmp_path / "t.jsonl").problem


def load_error(path: Path) -> ConfigFolderError:
    with pytest.raises(ConfigFolderError) as caught:
        load_tasks_file(path, RTE)
    assert caught.value.path == path
    return caught.value


# -- a different answer, to show the scores can fall ------------------------------------------------------


def different(answer: list[dict[str, Any]], config: LabelConfig) -> list[dict[str, Any]]:
    """``answer`` with its first region changed to something another annotator might give instead."""
    out = copy.deepcopy(answer)
    region = out[0]
    value, control = region["value"], config.control(region["from_name"])
    kind = control.type
    if kind == "pairwise":
        value["selected"] = "right" if value["selected"] == "left" else "left"
    elif kind == "rating":
        value["rating"] = 1 if value["rating"] != 1 else 5
    elif kind == "textarea":
        value["text"] = ["something else entirely"]
    elif kind == "taxonomy":
        value["taxonomy"] = [["Home", "Kitchen"]] if value["taxonomy"][0][0] != "Home" else [["Clothing", "Men"]]
    else:  # choices and *labels: another option
        key = {"choices": "choices", "labels": "labels"}.get(kind, kind)
        other = next(v for v in control.labels if v not in value[key])
        value[key] = [other]
    return out


# -- against the real Label Studio ------------------------------------------------------------------------


def _sent(region: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """The keys of a stored region that were sent (Label Studio may add its own, such as ``origin``)."""
    return {k: stored.get(k) for k in region}


@pytest.mark.integration
def test_every_folder_as_a_real_label_studio_project(labelstudio) -> None:
    seeder = Seeder(labelstudio.url, labelstudio.token)
    for path in FOLDERS:
        folder = ConfigFolder.load(path, check_policy=parse_policy)
        name = folder.name
        project = seeder.create_project(f"config folder {name}", folder.label_config,
                                        expert_instruction=folder.guideline_html, show_instruction=True)
        stored = seeder.project(project)
        # Label Studio keeps both as given, less the file's final newline: the guideline uses only what its
        # sanitiser keeps, and its version reads back from what Label Studio stores
        assert stored["label_config"] == folder.label_config.strip(), name
        assert stored["expert_instruction"].strip() == folder.guideline_html.strip(), name
        assert guideline_version(stored["expert_instruction"]) == folder.guideline_version, name
        interface = LabelInterface(stored["label_config"])
        interface.validate()
        assert {c.name for c in interface.controls} == set(folder.config.by_name), name

        sample_ids = seeder.import_tasks(project, folder.sample_tasks)
        assert len(sample_ids) == len(folder.sample_tasks), name
        gold = folder.gold[0]
        [task] = seeder.import_tasks(project, [{"data": gold.data}])
        assert seeder.task(task)["data"] == gold.data, name

        # a prediction and two annotations round-trip unchanged
        seeder.create_prediction(task, gold.answer, score=0.9, model_version="config-folder-test")
        [prediction] = [p for p in seeder.predictions(project) if p["task"] == task]
        assert [_sent(r, s) for r, s in zip(gold.answer, prediction["result"], strict=True)] == gold.answer, name
        first = seeder.create_annotation(task, gold.answer)["id"]
        second = seeder.create_annotation(task, copy.deepcopy(gold.answer))["id"]
        other = seeder.create_annotation(task, different(gold.answer, folder.config))["id"]
        by_id = {a["id"]: a for a in seeder.annotations(task)}
        assert set(by_id) == {first, second, other}, name
        assert [_sent(r, s) for r, s in zip(gold.answer, by_id[first]["result"], strict=True)] == gold.answer, name

        # crowdgate's similarity on what Label Studio stored: identical -> 1, a different answer -> < 1
        xml = stored["label_config"]
        assert compare_results(by_id[first], by_id[second], xml) == 1.0, name
        assert compare_results(by_id[first], gold.answer, xml) == 1.0, name
        assert compare_results(by_id[other], gold.answer, xml) < 1.0, name
        assert compare_results(by_id[other], by_id[first], xml) < 1.0, name
