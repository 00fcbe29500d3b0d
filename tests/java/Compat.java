// The pgJDBC leg of the client compatibility script (Debian's
// libpostgresql-jdbc-java). Prints results line by line; the harness compares
// gateway and direct runs.
//   java -cp /usr/share/java/postgresql.jar Compat.java JDBC_URL PROPS_JSON SCHEMA
import java.io.StringReader;
import java.io.StringWriter;
import java.sql.*;
import java.util.Properties;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;

public class Compat {
    static void out(Object o) { System.out.println(o); }

    static void dump(ResultSet rs) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        while (rs.next()) {
            StringBuilder sb = new StringBuilder();
            for (int i = 1; i <= md.getColumnCount(); i++) {
                Object v = rs.getObject(i);
                if (v instanceof byte[] b) v = java.util.HexFormat.of().formatHex(b);
                if (v instanceof Array a) v = java.util.Arrays.toString((Object[]) a.getArray());
                sb.append(v).append('|');
            }
            out(sb);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        Properties props = new Properties();
        // PROPS_JSON is a flat {"k": "v"} object; parse it without a JSON library.
        String body = args[1].trim().replaceAll("^\\{|\\}$", "");
        for (String pair : body.split(",\\s*\"")) {
            String[] kv = pair.split("\"\\s*:\\s*\"", 2);
            props.setProperty(kv[0].replace("\"", "").trim(), kv[1].replaceAll("\"$", ""));
        }
        props.setProperty("prepareThreshold", "2");
        String schema = args[2];
        try (Connection c = DriverManager.getConnection(url, props)) {
            Statement st = c.createStatement();
            st.execute("DROP SCHEMA IF EXISTS " + schema + " CASCADE");
            st.execute("CREATE SCHEMA " + schema);
            st.execute("SET search_path = " + schema);
            st.execute("CREATE TABLE t(id int primary key, n numeric(12,2), f float8, b bytea, ts timestamptz, j jsonb, a int[], u uuid, txt text)");
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO t VALUES (?,?,?,?,?,?::jsonb,?,?::uuid,?)")) {
                for (int i = 1; i <= 20; i++) {
                    ins.setInt(1, i);
                    ins.setBigDecimal(2, new java.math.BigDecimal(i * 1007).movePointLeft(2));
                    ins.setDouble(3, i * 1.5);
                    ins.setBytes(4, new byte[] {(byte) i, 0, (byte) 255});
                    ins.setTimestamp(5, Timestamp.from(java.time.Instant.parse("2024-01-01T00:00:00Z").plusSeconds(3600L * i)));
                    ins.setString(6, "{\"k\": " + i + ", \"s\": \"é\"}");
                    ins.setArray(7, c.createArrayOf("int4", new Integer[] {i, i + 1}));
                    ins.setString(8, String.format("00000000-0000-0000-0000-%012d", i));
                    ins.setString(9, "héllo " + i);
                    ins.executeUpdate();
                }
            }
            dump(st.executeQuery("SELECT * FROM t ORDER BY id"));
            // Executed past prepareThreshold: a named server statement with binary transfer.
            try (PreparedStatement sel = c.prepareStatement("SELECT txt, n, f, ts, u FROM t WHERE id = ?")) {
                for (int i : new int[] {3, 5, 7, 9, 11}) {
                    sel.setInt(1, i);
                    dump(sel.executeQuery());
                }
            }
            c.setAutoCommit(false);
            st.execute("INSERT INTO t(id) VALUES (100)");
            c.rollback();
            c.setAutoCommit(true);
            dump(st.executeQuery("SELECT count(*) FROM t"));
            try {
                st.executeQuery("SELECT 1/0");
            } catch (SQLException e) {
                out(e.getSQLState());
            }
            dump(st.executeQuery("SELECT 42"));
            CopyManager copy = c.unwrap(PGConnection.class).getCopyAPI();
            StringWriter w = new StringWriter();
            copy.copyOut("COPY (SELECT id, txt FROM t ORDER BY id) TO STDOUT", w);
            out(w);
            st.execute("CREATE TABLE c(id int, txt text)");
            out(copy.copyIn("COPY c FROM STDIN", new StringReader(w.toString())));
            st.execute("LISTEN ch");
            st.execute("NOTIFY ch, 'hello'");
            PGNotification[] ns = c.unwrap(PGConnection.class).getNotifications(5000);
            for (PGNotification n : ns) out(n.getName() + ":" + n.getParameter());
            long started = System.currentTimeMillis();
            Statement sleeper = c.createStatement();
            new Thread(() -> {
                try { Thread.sleep(500); sleeper.cancel(); } catch (Exception e) { throw new RuntimeException(e); }
            }).start();
            try {
                sleeper.execute("SELECT pg_sleep(20)");
            } catch (SQLException e) {
                out(e.getSQLState());
            }
            if (System.currentTimeMillis() - started > 10000) throw new IllegalStateException("cancel too slow");
            dump(st.executeQuery("SELECT 'still usable'"));
            // SQL that changes names, sent (as pgJDBC sends everything) with Parse/Bind/Execute.
            st.execute("PREPARE q AS SELECT id, txt FROM t WHERE id = 4");
            dump(st.executeQuery("EXECUTE q"));
            st.execute("DEALLOCATE q");
            st.execute("PREPARE q AS SELECT count(*) FROM t");
            dump(st.executeQuery("EXECUTE q"));
            st.execute("DEALLOCATE ALL");
            c.setAutoCommit(false);
            st.execute("DECLARE cur CURSOR FOR SELECT id FROM t ORDER BY id");
            dump(st.executeQuery("FETCH 3 FROM cur"));
            st.execute("CLOSE cur");
            c.commit();
            c.setAutoCommit(true);
            st.execute("DROP SCHEMA " + schema + " CASCADE");
        }
    }
}
