package archive

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/go-sql-driver/mysql"

	"github.com/tagcount/tagcount/migrations"
)

// rows is one table's rows of a load, in MariaDB's default LOAD DATA
// format: tab-separated fields, one row a line, \N for NULL.
type rows struct {
	table string
	cols  string
	buf   bytes.Buffer
	n     int64
}

func newRows(table, cols string) *rows { return &rows{table: table, cols: cols} }

// add appends a row of fields (int64, int, bool, string or nil for NULL).
func (r *rows) add(fields ...any) {
	for i, f := range fields {
		if i > 0 {
			r.buf.WriteByte('\t')
		}
		switch v := f.(type) {
		case nil:
			r.buf.WriteString(`\N`)
		case int64:
			r.buf.Write(strconv.AppendInt(r.buf.AvailableBuffer(), v, 10))
		case int:
			r.buf.Write(strconv.AppendInt(r.buf.AvailableBuffer(), int64(v), 10))
		case bool:
			if v {
				r.buf.WriteByte('1')
			} else {
				r.buf.WriteByte('0')
			}
		case string:
			loadEscaper.WriteString(&r.buf, v)
		default:
			panic(fmt.Sprintf("archive: field of type %T", f))
		}
	}
	r.buf.WriteByte('\n')
	r.n++
}

// loadEscaper escapes what LOAD DATA's default format gives a meaning.
var loadEscaper = strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`)

var handlerSeq atomic.Int64

// load writes r's rows into its table in q with one LOAD DATA LOCAL INFILE
// statement (the fastest bulk load MariaDB and MySQL offer: no statement
// to parse per row), streamed from memory through the driver's reader
// handler. ignore skips rows whose key exists (an idempotent re-run). It
// returns the database's error: the server refuses it when its local_infile
// setting is off.
func load(ctx context.Context, q migrations.Querier, r *rows, ignore bool) error {
	if r.n == 0 {
		return nil
	}
	name := "archive-" + r.table + "-" + strconv.FormatInt(handlerSeq.Add(1), 10)
	data := r.buf.Bytes()
	mysql.RegisterReaderHandler(name, func() io.Reader { return bytes.NewReader(data) })
	defer mysql.DeregisterReaderHandler(name)
	mode := ""
	if ignore {
		mode = "IGNORE "
	}
	_, err := q.ExecContext(ctx, "LOAD DATA LOCAL INFILE 'Reader::"+name+"' "+mode+"INTO TABLE "+r.table+
		" CHARACTER SET utf8mb4 ("+r.cols+")")
	if err != nil {
		return fmt.Errorf("archive: load %s: %w", r.table, err)
	}
	return nil
}
