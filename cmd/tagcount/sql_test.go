package main

import (
	"database/sql"

	_ "github.com/go-sql-driver/mysql"
)

func sqlOpen(dsn string) (*sql.DB, error) { return sql.Open("mysql", dsn) }
