package mapsindoors

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The threat model is a table of tests: these checks keep it one. Every row
// names tests that exist in the repository, every promise it indexes is
// still worded so in the document it quotes, and no paragraph of the README
// or of docs/ says "never" without a promise of the index in it.

const threatModelPath = "docs/threat-model.md"

var (
	rowIDPattern    = regexp.MustCompile(`^[A-Z]{1,4}-[0-9]+$`)
	testNamePattern = regexp.MustCompile("`((?:Test|Fuzz|Benchmark)[A-Za-z0-9_]+)(?:/[^`]*)?`")
	testFuncPattern = regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Benchmark)[A-Za-z0-9_]+)\(`)
	neverPattern    = regexp.MustCompile(`(?i)\bnever\b`)
	rowRefPattern   = regexp.MustCompile(`[A-Z]{1,4}-[0-9]+`)
)

type threatRow struct {
	id    string
	tests []string
	line  int
}

type promise struct {
	file, phrase string
	rows         []string
	line         int
}

// readThreatModel splits the document's tables into its rows (first cell a
// row id such as CW-1, last cell the tests) and its promise index (first
// cell a document path, then the phrase quoted from it, then row ids).
func readThreatModel(t *testing.T) ([]threatRow, []promise) {
	t.Helper()
	raw, err := os.ReadFile(threatModelPath)
	require.NoError(t, err)
	var rows []threatRow
	var promises []promise
	for i, line := range strings.Split(string(raw), "\n") {
		cells := tableCells(line)
		if len(cells) < 3 {
			continue
		}
		first := strings.Trim(cells[0], "`")
		switch {
		case rowIDPattern.MatchString(first):
			row := threatRow{id: first, line: i + 1}
			for _, m := range testNamePattern.FindAllStringSubmatch(cells[len(cells)-1], -1) {
				row.tests = append(row.tests, m[1])
			}
			rows = append(rows, row)
		case strings.HasSuffix(first, ".md"):
			promises = append(promises, promise{
				file: first, phrase: cells[1], line: i + 1,
				rows: rowRefPattern.FindAllString(cells[2], -1),
			})
		}
	}
	return rows, promises
}

// tableCells is a markdown table row's cells, or nil for any other line.
func tableCells(line string) []string {
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, "|") || !strings.HasSuffix(line, "|") {
		return nil
	}
	parts := strings.Split(strings.Trim(line, "|"), "|")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

// repositoryTests are the names of every test, fuzz target and benchmark
// in the repository, the end-to-end module included.
func repositoryTests(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	root := os.DirFS(".")
	err := fs.WalkDir(root, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := fs.ReadFile(root, path)
		if err != nil {
			return err
		}
		for _, m := range testFuncPattern.FindAllStringSubmatch(string(src), -1) {
			names[m[1]] = true
		}
		return nil
	})
	require.NoError(t, err)
	return names
}

func TestThreatModel_EveryRowNamesTestsThatExist(t *testing.T) {
	rows, _ := readThreatModel(t)
	require.NotEmpty(t, rows, "no rows found in %s", threatModelPath)
	exists := repositoryTests(t)
	seen := map[string]int{}
	for _, row := range rows {
		if prev, dup := seen[row.id]; dup {
			t.Errorf("%s:%d: row %s is also on line %d", threatModelPath, row.line, row.id, prev)
		}
		seen[row.id] = row.line
		if len(row.tests) == 0 {
			t.Errorf("%s:%d: row %s names no test", threatModelPath, row.line, row.id)
		}
		for _, name := range row.tests {
			if !exists[name] {
				t.Errorf("%s:%d: row %s names %s, which no _test.go file defines", threatModelPath, row.line, row.id, name)
			}
		}
	}
}

func TestThreatModel_EveryIndexedPromiseIsStillWordedSo(t *testing.T) {
	rows, promises := readThreatModel(t)
	require.NotEmpty(t, promises, "no promise index found in %s", threatModelPath)
	ids := map[string]bool{}
	for _, r := range rows {
		ids[r.id] = true
	}
	for _, p := range promises {
		text := collapsedDoc(t, p.file)
		if !strings.Contains(text, collapseSpace(p.phrase)) {
			t.Errorf("%s:%d: %s no longer says %q: mend the document or the index", threatModelPath, p.line, p.file, p.phrase)
		}
		if len(p.rows) == 0 {
			t.Errorf("%s:%d: the promise %q names no row", threatModelPath, p.line, p.phrase)
		}
		for _, id := range p.rows {
			if !ids[id] {
				t.Errorf("%s:%d: the promise %q names row %s, which does not exist", threatModelPath, p.line, p.phrase, id)
			}
		}
	}
}

// A "never" in the README or docs/ is a promise: each paragraph (or table
// row, or list item) that says it quotes a promise of the index.
func TestThreatModel_NoNeverWithoutARow(t *testing.T) {
	_, promises := readThreatModel(t)
	phrases := map[string][]string{}
	for _, p := range promises {
		phrases[p.file] = append(phrases[p.file], collapseSpace(p.phrase))
	}
	docs, err := filepath.Glob("docs/*.md")
	require.NoError(t, err)
	for _, file := range append([]string{"README.md"}, docs...) {
		if file == threatModelPath {
			continue
		}
		for _, block := range docBlocks(t, file) {
			if !neverPattern.MatchString(block) {
				continue
			}
			covered := false
			for _, phrase := range phrases[file] {
				if strings.Contains(block, phrase) {
					covered = true
					break
				}
			}
			if !covered {
				t.Errorf("%s says \"never\" in a passage that quotes no promise of %s: add a row with its tests and index it, or reword it\n\t%s",
					file, threatModelPath, block)
			}
		}
	}
}

func collapseSpace(s string) string { return strings.Join(strings.Fields(s), " ") }

func collapsedDoc(t *testing.T, file string) string {
	t.Helper()
	raw, err := os.ReadFile(file)
	require.NoError(t, err, "the promise index names %s", file)
	return collapseSpace(string(raw))
}

// docBlocks splits a markdown file into paragraphs, each table row and
// each list item apart, with its whitespace collapsed.
func docBlocks(t *testing.T, file string) []string {
	t.Helper()
	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	var blocks []string
	var cur []string
	flush := func() {
		if len(cur) > 0 {
			blocks = append(blocks, collapseSpace(strings.Join(cur, " ")))
			cur = nil
		}
	}
	for _, line := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			flush()
			continue
		case strings.HasPrefix(trimmed, "|"), strings.HasPrefix(trimmed, "- "), strings.HasPrefix(trimmed, "#"),
			regexp.MustCompile(`^[0-9]+\. `).MatchString(trimmed):
			flush()
		}
		cur = append(cur, trimmed)
	}
	flush()
	return blocks
}
