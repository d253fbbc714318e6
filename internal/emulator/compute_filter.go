package emulator

import (
	"regexp"
	"strings"
)

// computeFilter is the subset of Compute's list filter language that
// clients send for single-instance lookups: a conjunction of comparisons,
// optionally parenthesised and joined by AND, on name, id, status or zone.
//
//	name eq vm1            legacy form: the value is an RE2 matched in full
//	name ne ^vm-.*$
//	(name = "vm1")         current form: exact, '*' is a wildcard
//	id = 123 AND status != STOPPED
//
// Anything else (OR, NOT, other fields) is refused with Compute's 400 so a
// test notices instead of silently matching everything.
type computeFilter []filterTerm

type filterTerm struct {
	field  string
	negate bool
	re     *regexp.Regexp
}

func (f computeFilter) match(in *instance) bool {
	for _, t := range f {
		var ok bool
		switch t.field {
		case "name":
			ok = t.re.MatchString(in.Name)
		case "id":
			ok = t.re.MatchString(in.ID)
		case "status":
			ok = t.re.MatchString(in.Status)
		case "zone":
			ok = t.re.MatchString(in.Zone)
		}
		if ok == t.negate {
			return false
		}
	}
	return true
}

// filterTokens splits a filter into words, quoted strings, parentheses and
// the operators = != and :.
func filterTokens(s string) ([]string, bool) {
	var toks []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '(' || c == ')' || c == '=' || c == ':':
			toks = append(toks, string(c))
			i++
		case c == '!' && i+1 < len(s) && s[i+1] == '=':
			toks = append(toks, "!=")
			i += 2
		case c == '"' || c == '\'':
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				return nil, false
			}
			toks = append(toks, s[i:i+j+2])
			i += j + 2
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t()=:\"'", rune(s[j])) && !(s[j] == '!' && j+1 < len(s) && s[j+1] == '=') {
				j++
			}
			toks = append(toks, s[i:j])
			i = j
		}
	}
	return toks, true
}

func parseComputeFilter(s string) (computeFilter, *apiError) {
	bad := func() (computeFilter, *apiError) {
		return nil, errComputeInvalid("filter", s, "Invalid list filter expression.")
	}
	toks, ok := filterTokens(s)
	if !ok {
		return bad()
	}
	var f computeFilter
	for i := 0; i < len(toks); {
		switch toks[i] {
		case "(", ")", "AND":
			i++
			continue
		}
		if i+2 >= len(toks) {
			return bad()
		}
		field, op, val := toks[i], toks[i+1], toks[i+2]
		i += 3
		switch field {
		case "name", "id", "status", "zone":
		default:
			return bad()
		}
		quoted := len(val) >= 2 && (val[0] == '"' || val[0] == '\'')
		if quoted {
			val = val[1 : len(val)-1]
		}
		if field == "zone" && op != "eq" && op != "ne" {
			val = val[strings.LastIndexByte(val, '/')+1:] // a zone URL names its zone last
		}
		t := filterTerm{field: field}
		var pattern string
		switch op {
		case "eq", "ne":
			t.negate = op == "ne"
			pattern = val
		case "=", "!=", ":":
			t.negate = op == "!="
			parts := strings.Split(val, "*")
			for i := range parts {
				parts[i] = regexp.QuoteMeta(parts[i])
			}
			pattern = strings.Join(parts, ".*")
		default:
			return bad()
		}
		re, err := regexp.Compile("^(?:" + pattern + ")$")
		if err != nil {
			return bad()
		}
		t.re = re
		f = append(f, t)
	}
	return f, nil
}
