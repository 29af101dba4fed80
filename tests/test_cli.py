"""The command line as a person meets it: clear errors, no tracebacks."""

from click.testing import CliRunner

from station.cli import main


def test_evaluate_on_a_missing_folder_names_it(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--data", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "nope: no such folder" in result.output
    assert "Traceback" not in result.output


def test_evaluate_with_a_missing_model_names_the_file(tmp_path):
    from conftest import SAMPLE_DIR

    result = CliRunner().invoke(main, ["evaluate", "--model", str(tmp_path), "--data",
                                       str(SAMPLE_DIR)])
    assert result.exit_code == 1
    assert "model_card.json: model card not found" in result.output


def test_evaluate_shipped_model_on_the_samples(tmp_path):
    from conftest import SAMPLE_DIR

    result = CliRunner().invoke(main, ["evaluate", "--data", str(SAMPLE_DIR), "--plots",
                                       str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "MISSED DEFECTS 0" in result.output
    assert (tmp_path / "confusion_matrix.png").exists()
