"""Reading the reference CSV layout ``source,question,answer,rating`` (the original hub datasets' files)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

HEADER = ["source", "question", "answer", "rating"]


class CsvFormatError(ValueError):
    """A CSV file or row that does not follow the reference layout; the message names file:line."""

    def __init__(self, path: Path | str, line: int, problem: str):
        self.path, self.line, self.problem = Path(path), line, problem
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class CsvRow:
    source: str
    question: str
    answer: str
    rating: int
    line: int = 0  # 1-based line in the file, for error messages of the task builders

    def error(self, path: Path | str, problem: str) -> CsvFormatError:
        return CsvFormatError(path, self.line, problem)


def read_puzzle_csv(path: Path | str) -> list[CsvRow]:
    """All rows of one CSV; raises CsvFormatError naming the file, the line and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CsvFormatError(path, 0, "file not found")
    rows: list[CsvRow] = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise CsvFormatError(path, 1, "empty file; expected the header 'source,question,answer,rating'")
            if [h.strip().lower() for h in header] != HEADER:
                raise CsvFormatError(
                    path, 1, f"header is {','.join(header)!r}; expected 'source,question,answer,rating'"
                )
            for fields in reader:
                line = reader.line_num
                if not fields:
                    continue  # blank line
                rows.append(_parse_row(path, line, fields))
    except UnicodeDecodeError as e:
        raise CsvFormatError(path, 0, f"not UTF-8 text ({e.reason} at byte {e.start})") from e
    except csv.Error as e:
        raise CsvFormatError(path, reader.line_num, f"malformed CSV ({e})") from e
    if not rows:
        raise CsvFormatError(path, 0, "no puzzle rows after the header")
    return rows


def _parse_row(path: Path, line: int, fields: list[str]) -> CsvRow:
    if len(fields) != 4:
        raise CsvFormatError(path, line, f"expected 4 columns (source,question,answer,rating), found {len(fields)}")
    source, question, answer, rating = fields
    if not question:
        raise CsvFormatError(path, line, "empty question")
    if len(answer) != len(question):
        raise CsvFormatError(path, line, f"answer has {len(answer)} characters but question has {len(question)}")
    try:
        r = int(rating.strip() or 0)
    except ValueError:
        raise CsvFormatError(path, line, f"rating {rating!r} is not an integer") from None
    return CsvRow(source, question, answer, r, line)


def find_split_csv(folder: Path | str, split: str) -> Path | None:
    """The CSV of `split` in a --from-csv folder: `<split>.csv`, else `<split>.hrm.csv`, else one `*<split>*.csv`."""
    folder = Path(folder)
    for name in (f"{split}.csv", f"{split}.hrm.csv"):
        if (folder / name).is_file():
            return folder / name
    matches = sorted(folder.glob(f"*{split}*.csv"))
    return matches[0] if len(matches) == 1 else None
