// A reviewer approves a held statement from the /reviews page, in headless
// Chromium (Debian's /usr/bin/chromium driven by playwright-core).
//
//   node tests/browser/approve-review.mjs ADMIN_URL REVIEWER_TOKEN SUBJECT
//
// Opens ADMIN_URL/reviews, enters the token, prints "ready <connection
// status>" once the page is connected, then waits for a pending review row
// whose requester is SUBJECT (the caller holds a statement after "ready"),
// opens it, clicks Approve and prints "done <json>". Anything else: a line
// "error <text>" on stdout, details on stderr, exit 1.
// Driven by tests/e2e/test_reviews.py::test_browser_approves_held_statement.
import { chromium } from "playwright-core";

const [adminUrl, token, subject] = process.argv.slice(2);
if (!adminUrl || !token || !subject) {
  console.log("error usage: approve-review.mjs ADMIN_URL REVIEWER_TOKEN SUBJECT");
  process.exit(2);
}
const executablePath = process.env.HOOP_CHROMIUM || "/usr/bin/chromium";
const timeout = Number(process.env.HOOP_BROWSER_TIMEOUT_MS || 20000);

const problems = [];
let browser;
let page;
try {
  browser = await chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  page = await browser.newPage();
  page.setDefaultTimeout(timeout);
  page.on("pageerror", (error) => problems.push("page error: " + error.message));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push("console error: " + message.text());
  });

  const response = await page.goto(adminUrl.replace(/\/$/, "") + "/reviews");
  if (!response || response.status() !== 200) {
    throw new Error("GET /reviews answered " + (response ? response.status() : "nothing"));
  }
  const connection = page.getByTestId("connection-status");
  await connection.waitFor();

  await page.getByTestId("token-input").fill(token);
  await page.getByTestId("token-save").click();
  // Connected: the event stream is live (or the page fell back to polling).
  await page.waitForFunction(() => {
    const node = document.querySelector('[data-testid="connection-status"]');
    return node && (node.textContent === "live" || node.textContent.startsWith("polling")
      || node.className === "error");
  });
  const status = (await connection.textContent()) || "";
  if ((await connection.getAttribute("class")) === "error") {
    throw new Error("the page could not connect with the token: " + status);
  }
  console.log("ready " + status);

  // The held statement shows up without reloading the page.
  const row = page
    .locator('[data-testid="pending-reviews"] [data-testid="review-row"][data-status="pending"]')
    .filter({ has: page.locator("td", { hasText: new RegExp("^" + subject.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "$") }) })
    .first();
  await row.waitFor();
  const reviewId = await row.getAttribute("data-review-id");
  await row.click();

  const detail = page.locator(`[data-testid="review-detail"][data-review-id="${reviewId}"]`);
  await detail.waitFor();
  await page.getByTestId("controls").waitFor();
  const detailSql = (await page.getByTestId("detail-sql").textContent()) || "";
  const detailStatus = (await page.getByTestId("detail-status").textContent()) || "";

  await page.getByTestId("reason").fill("looked at it in the browser");
  await page.getByTestId("approve").click();
  const message = page.getByTestId("message");
  await page.waitForFunction(() => {
    const node = document.querySelector('[data-testid="message"]');
    return node && /is (approved|denied|modified)\.|error/.test(node.textContent + " " + node.className);
  });
  const messageText = (await message.textContent()) || "";
  if (!/ is approved\.$/.test(messageText)) {
    throw new Error("approving did not work: " + messageText);
  }
  // The page refreshes after the decision: the review leaves the pending list.
  await page
    .locator(`[data-testid="recent-reviews"] [data-testid="review-row"][data-review-id="${reviewId}"]`)
    .waitFor();
  const finalStatus = await page
    .locator(`[data-testid="recent-reviews"] [data-testid="review-row"][data-review-id="${reviewId}"]`)
    .getAttribute("data-status");
  if (problems.some((p) => p.startsWith("page error"))) {
    throw new Error(problems.join("; "));
  }
  console.log("done " + JSON.stringify({
    reviewId, detailSql, detailStatus, message: messageText, finalStatus, connection: status, problems,
  }));
  await browser.close();
  process.exit(0);
} catch (error) {
  console.log("error " + String(error && error.message ? error.message : error).split("\n")[0]);
  console.error(error && error.stack ? error.stack : String(error));
  if (problems.length) console.error("page problems:\n  " + problems.join("\n  "));
  if (page) {
    try {
      console.error("page text at failure:\n" + (await page.locator("body").innerText()).slice(0, 4000));
    } catch (_) {
      // the page is gone
    }
  }
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
