package migrations

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// DefaultDSN is the DSN of the machine's local MariaDB used by `tagcount dev`
// and the tests.
const DefaultDSN = "root@tcp(127.0.0.1:3306)/tagcount?parseTime=true"

// DefaultMaxOpenConns is the size of a pool Open returns: DefaultPool's
// MaxOpen. Processes size each of their pools (docs/operations.md,
// "Connection budget"); this default is for the command-line tools and the
// tests, small enough that many of them fit in MariaDB's default
// max_connections (151) at once.
const DefaultMaxOpenConns = 16

// DefaultPool is the pool Open returns, and what Pool's zero fields take.
var DefaultPool = Pool{MaxOpen: DefaultMaxOpenConns, MaxIdleTime: time.Minute, MaxLifetime: 30 * time.Minute}

// Pool is how many connections a pool keeps and for how long. Every
// connection is a server thread and counts against the server's
// max_connections, busy or idle.
type Pool struct {
	// MaxOpen caps the pool's connections, busy and idle; a caller past it
	// waits for one to come back. Zero takes DefaultPool's.
	MaxOpen int
	// MaxIdle caps the idle connections kept for reuse. Zero keeps up to
	// MaxOpen: a pool under steady load reuses its connections instead of
	// closing and opening them, and MaxIdleTime closes them once load ends.
	MaxIdle int
	// MaxIdleTime closes a connection idle this long. Zero takes
	// DefaultPool's (a minute).
	MaxIdleTime time.Duration
	// MaxLifetime closes a connection this old when it is next idle, so
	// connections move to a server that came back after a failover. Zero
	// takes DefaultPool's (30 minutes).
	MaxLifetime time.Duration
}

// WithDefaults returns p with its zero fields set from DefaultPool and
// MaxIdle at most MaxOpen.
func (p Pool) WithDefaults() Pool {
	if p.MaxOpen <= 0 {
		p.MaxOpen = DefaultPool.MaxOpen
	}
	if p.MaxIdle <= 0 || p.MaxIdle > p.MaxOpen {
		p.MaxIdle = p.MaxOpen
	}
	if p.MaxIdleTime <= 0 {
		p.MaxIdleTime = DefaultPool.MaxIdleTime
	}
	if p.MaxLifetime <= 0 {
		p.MaxLifetime = DefaultPool.MaxLifetime
	}
	return p
}

// SetPool sizes db as p says (its zero fields taking the defaults).
func (db *DB) SetPool(p Pool) {
	p = p.WithDefaults()
	db.SetMaxOpenConns(p.MaxOpen)
	db.SetMaxIdleConns(p.MaxIdle)
	db.SetConnMaxIdleTime(p.MaxIdleTime)
	db.SetConnMaxLifetime(p.MaxLifetime)
}

// DefaultIOTimeout is the driver's read and write timeout when the DSN sets
// none (readTimeout, writeTimeout): how long one packet may take to arrive or
// leave before the connection is given up. It bounds a statement that runs
// without a context deadline on a server that stopped answering, so it must
// be longer than the longest legitimate statement: reconcile's snapshot
// queries take tens of seconds on a large archive.
const DefaultIOTimeout = 60 * time.Second

// DB is a connection pool that knows which server it talks to. Every
// tagcount package takes a *DB; what differs between MariaDB and MySQL is
// probed once, when the pool is opened.
type DB struct {
	*sql.DB
	// MariaDB is true on MariaDB, which has DELETE ... RETURNING (MySQL 8
	// has not).
	MariaDB bool
	// ConsecutiveIDs is true when a multi-row INSERT gets consecutive
	// auto-increment ids (innodb_autoinc_lock_mode 0 or 1, MariaDB's default,
	// with an increment of 1), so they need not be read back.
	ConsecutiveIDs bool
	// Version is the server's VERSION().
	Version string

	manualCommit bool // autocommit is off (OpenManualCommit)
}

// Querier is what a statement runs on: a pool, a transaction or a
// connection. Functions that must run inside their caller's transaction take
// one.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Open opens a pool on dsn with the settings every tagcount process needs
// (parseTime, UTC, client-side interpolation, driver timeouts), sized as
// DefaultPool (SetPool resizes it), pings it and
// probes the server's flavor. The returned error names the address and how
// to start MariaDB when the server is unreachable.
func Open(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := openConfig(dsn)
	if err != nil {
		return nil, err
	}
	return open(ctx, cfg)
}

// OpenManualCommit opens a pool like Open whose sessions run with
// autocommit off, for ExecCommitted only: every statement opens a
// transaction that nothing but ExecCommitted's COMMIT ends. It fails as Open
// does.
func OpenManualCommit(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := openConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.Params["autocommit"] = "0"
	db, err := open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	db.manualCommit = true
	return db, nil
}

// ExecCommitted runs one write on db (from OpenManualCommit) and commits it:
// two round trips where an explicit transaction takes three (START
// TRANSACTION, the statement, COMMIT), with the same promise. The write is
// saved only if its caller is still there to send COMMIT: when ctx ends
// first, the driver drops the connection and the server rolls the statement
// back, so a client told its write failed never finds it saved (only a
// deadline passing while COMMIT itself is in flight leaves the outcome
// unknown). It returns the statement's or COMMIT's error, with nothing
// saved but in that one case.
func (db *DB) ExecCommitted(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if !db.manualCommit {
		return nil, errors.New("migrations: ExecCommitted needs a pool from OpenManualCommit")
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	res, err := conn.ExecContext(ctx, query, args...)
	if err == nil {
		_, err = conn.ExecContext(ctx, "COMMIT")
	}
	if err != nil {
		// A failed statement (a duplicate key, a lock wait timeout) leaves
		// its transaction open: roll it back, or do not reuse the connection.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, rerr := conn.ExecContext(rctx, "ROLLBACK"); rerr != nil {
			conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		return nil, err
	}
	return res, nil
}

// Commit commits tx, giving up when ctx ends first. database/sql's Commit
// takes no context, so a COMMIT sent to a server that stopped answering
// would wait for the driver's read timeout (DefaultIOTimeout), long past
// its caller's deadline. When ctx ends first the outcome is unknown (the
// COMMIT may still land; it finishes or fails on its own) and Commit returns
// an error wrapping ctx's; otherwise it returns the COMMIT's error.
func Commit(ctx context.Context, tx *sql.Tx) error {
	if ctx.Done() == nil {
		return tx.Commit()
	}
	done := make(chan error, 1)
	go func() { done <- tx.Commit() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("commit abandoned at the deadline, outcome unknown: %w", context.Cause(ctx))
	}
}

// open opens, pings and probes a pool on cfg.
func open(ctx context.Context, cfg *mysql.Config) (*DB, error) {
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("bad MySQL DSN: %w", err)
	}
	db := &DB{DB: sql.OpenDB(connector)}
	db.SetPool(DefaultPool)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.probe(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("MySQL at %s is unreachable (%w); start it (e.g. `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd`) or set TAGCOUNT_MYSQL_DSN", cfg.Addr, err)
	}
	return db, nil
}

// openConfig parses dsn and adds the settings Open promises.
func openConfig(dsn string) (*mysql.Config, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("bad MySQL DSN: %w", err)
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	// Interpolate arguments client-side: a server-side prepared statement
	// costs three round trips (prepare, execute, close) and a parse for every
	// query, which dominated the posting path's database time. Safe with the
	// utf8mb4 connection charset; the driver refuses it for unsafe charsets.
	cfg.InterpolateParams = true
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second // dial
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = DefaultIOTimeout
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultIOTimeout
	}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	// Every session reads and writes UTC, whatever the server's zone.
	cfg.Params["time_zone"] = "'+00:00'"
	return cfg, nil
}

// probe reads what the server is, once per pool.
func (db *DB) probe(ctx context.Context) error {
	var mode, step int
	err := db.QueryRowContext(ctx, "SELECT VERSION(), @@innodb_autoinc_lock_mode, @@auto_increment_increment").
		Scan(&db.Version, &mode, &step)
	if err != nil {
		return err
	}
	db.MariaDB = strings.Contains(strings.ToLower(db.Version), "mariadb")
	db.ConsecutiveIDs = mode < 2 && step == 1
	return nil
}

// CreateDatabase creates the database named in dsn if it does not exist,
// connecting without a database first.
func CreateDatabase(ctx context.Context, dsn string) error {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return fmt.Errorf("bad MySQL DSN: %w", err)
	}
	name := cfg.DBName
	if name == "" {
		return fmt.Errorf("MySQL DSN %q names no database", RedactDSN(dsn))
	}
	cfg.DBName = ""
	db, err := Open(ctx, cfg.FormatDSN())
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS `"+name+"` CHARACTER SET utf8mb4")
	return err
}

// RedactDSN returns dsn with its password replaced by "xxxxx", for output;
// a DSN that does not parse is replaced whole, as it may hold one.
func RedactDSN(dsn string) string {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "(a MySQL DSN that does not parse)"
	}
	if cfg.Passwd != "" {
		cfg.Passwd = "xxxxx"
	}
	return cfg.FormatDSN()
}

// WithDatabase returns dsn naming database instead (when database is not
// empty). It fails on a malformed DSN or when the result names no database.
func WithDatabase(dsn, database string) (string, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", fmt.Errorf("bad MySQL DSN: %w", err)
	}
	if database != "" {
		cfg.DBName = database
	}
	if cfg.DBName == "" {
		return "", errors.New("the MySQL DSN names no database")
	}
	return cfg.FormatDSN(), nil
}

// MySQL error numbers that mean "try again": the server rolled the
// transaction (or statement) back whole, so nothing was half-applied.
// ErLockTableFull is InnoDB out of room for row locks in a crowded buffer
// pool (it rolls the whole transaction back, as for a deadlock): room comes
// back as other transactions end, so it is transient too.
const (
	ErLockWaitTimeout = 1205
	ErLockTableFull   = 1206
	ErLockDeadlock    = 1213
)

// IsLockConflict reports whether err is a deadlock, a lock wait timeout or
// the lock table full: the server rolled the transaction (or statement)
// back whole, so running it again is the fix.
func IsLockConflict(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == ErLockDeadlock || me.Number == ErLockWaitTimeout || me.Number == ErLockTableFull)
}

// IsLockTableFull reports whether err is the lock table full (rather than
// a deadlock or a lock wait timeout).
func IsLockTableFull(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == ErLockTableFull
}

// IsDeadlock reports whether err is a deadlock (rather than a lock wait
// timeout).
func IsDeadlock(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == ErLockDeadlock
}

// IsServerBusy reports whether err is the server refusing work for now:
// too many connections, shutting down, or the connection killed.
func IsServerBusy(err error) bool {
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return false
	}
	switch me.Number {
	case 1040, 1053, 1927: // ER_CON_COUNT_ERROR, ER_SERVER_SHUTDOWN, ER_CONNECTION_KILLED
		return true
	}
	return false
}

// IsAccessDenied reports whether err is the server refusing a statement
// for want of a privilege (on a database, table or column, or a specific
// one): the statement was refused whole, and a grant by an operator, not
// a change of the statement, makes it succeed.
func IsAccessDenied(err error) bool {
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return false
	}
	switch me.Number {
	case 1044, 1142, 1143, 1227: // ER_DBACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR, ER_COLUMNACCESS_DENIED_ERROR, ER_SPECIFIC_ACCESS_DENIED_ERROR
		return true
	}
	return false
}

// IsUnavailable reports whether err means the database (or another
// dependency) could not be reached: connection refused, reset, a bad
// connection, a network timeout.
func IsUnavailable(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || errors.As(err, &ne) || errors.Is(err, mysql.ErrInvalidConn) ||
		errors.Is(err, driver.ErrBadConn)
}

// Placeholders returns n copies of s separated by sep: the placeholder list
// of an IN (...), the rows of a multi-row VALUES, the terms of an OR.
func Placeholders(s, sep string, n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat(s+sep, n-1) + s
}

// InsertRows runs insert (an INSERT … VALUES statement without its rows)
// in q with n rows of the placeholder tuple row, filled from args, and
// returns the auto-increment id of the first row inserted.
func InsertRows(ctx context.Context, q Querier, insert, row string, n int, args ...any) (first int64, err error) {
	res, err := q.ExecContext(ctx, insert+Placeholders(row, ",", n), args...)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// InsertIDs runs insert (an INSERT … VALUES statement without its rows) in
// q with n rows of the placeholder tuple row, filled from args (the same
// number of them per row), and returns the rows' auto-increment ids in
// order. It is the one place that decides how the ids of a multi-row
// insert are known: where db gives one statement's rows consecutive ids
// (db.ConsecutiveIDs: MariaDB's default, the servers the suite runs on)
// they are the first row's and the next n-1; elsewhere (MySQL 8's default
// innodb_autoinc_lock_mode 2, where concurrent inserts interleave their
// ids; untested) each row is inserted by a statement of its own. It
// returns the database's error.
func InsertIDs(ctx context.Context, db *DB, q Querier, insert, row string, n int, args ...any) ([]int64, error) {
	ids := make([]int64, n)
	if db.ConsecutiveIDs {
		first, err := InsertRows(ctx, q, insert, row, n, args...)
		for i := range ids {
			ids[i] = first + int64(i)
		}
		return ids, err
	}
	per := len(args) / max(n, 1)
	for i := range ids {
		id, err := InsertRows(ctx, q, insert, row, 1, args[i*per:(i+1)*per]...)
		if err != nil {
			return nil, err
		}
		ids[i] = id
	}
	return ids, nil
}

// IDList returns prefix, then ids in decimal separated by commas, then
// suffix: a statement with an inline IN list. The ids are integers this
// process formats, so inlining them is safe, and the text protocol saves
// the round trips of a prepared statement. No ids make the list "NULL",
// which no row's id equals: "IN (NULL)" matches nothing instead of being a
// syntax error. (After NOT IN it would match nothing too: not for that.)
func IDList(prefix string, ids []int64, suffix string) string {
	var sb strings.Builder
	sb.Grow(len(prefix) + 12*len(ids) + len(suffix) + 4)
	sb.WriteString(prefix)
	if len(ids) == 0 {
		sb.WriteString("NULL")
	}
	var buf [20]byte
	for i, id := range ids {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.Write(strconv.AppendInt(buf[:0], id, 10))
	}
	sb.WriteString(suffix)
	return sb.String()
}

// SumsByID runs query (which selects an id and an integer) on q and returns
// the integers by id: the shape of every per-tag aggregate.
func SumsByID(ctx context.Context, q Querier, query string, args ...any) (map[int64]int64, error) {
	return CollectMap(ctx, q, func(rows *sql.Rows) (id, v int64, err error) {
		err = rows.Scan(&id, &v)
		return id, v, err
	}, query, args...)
}

// EachRow runs query on q and calls row for each row it returns (row reads
// it with rows.Scan). It stops at the first error, row's or the query's,
// closes the rows and returns that error.
func EachRow(ctx context.Context, q Querier, row func(*sql.Rows) error, query string, args ...any) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Collect runs query on q and returns one T per row, as scan reads it.
func Collect[T any](ctx context.Context, q Querier, scan func(*sql.Rows) (T, error), query string, args ...any) ([]T, error) {
	var out []T
	err := EachRow(ctx, q, func(rows *sql.Rows) error {
		v, err := scan(rows)
		out = append(out, v)
		return err
	}, query, args...)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CollectMap runs query on q and returns one entry per row, the key and
// value scan reads from it (a later row of a key replaces an earlier one);
// an empty map when there are no rows.
func CollectMap[K comparable, V any](ctx context.Context, q Querier, scan func(*sql.Rows) (K, V, error), query string, args ...any) (map[K]V, error) {
	out := make(map[K]V)
	err := EachRow(ctx, q, func(rows *sql.Rows) error {
		k, v, err := scan(rows)
		out[k] = v
		return err
	}, query, args...)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ScanInt64 reads a row of one integer column: Collect's scan for a list
// of ids.
func ScanInt64(rows *sql.Rows) (v int64, err error) {
	err = rows.Scan(&v)
	return v, err
}

// Exists reports whether query (a SELECT of at most one row) finds a row.
func Exists(ctx context.Context, q Querier, query string, args ...any) (bool, error) {
	var one int
	err := q.QueryRowContext(ctx, query, args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}
