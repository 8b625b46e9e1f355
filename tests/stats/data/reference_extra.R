# More R figures for one cohort CSV than tests/reference/reference.R gives, at full precision:
# KM variance and median (print.survfit), cmprsk's raw cinc curve, survdiff's own df and p, Gray's
# test for any number of groups, and edge cohorts where reference.R stops (no endpoint at all).
# Usage: Rscript reference_extra.R cohort.csv out.json   (R 4.2, survival 3.5, cmprsk 2.2-11)
suppressMessages({library(survival); library(cmprsk)})
a <- commandArgs(TRUE); d <- read.csv(a[1])
z <- qnorm(0.975)
hd <- c(3, 6, 12, 24, 48) * 365.25 / 12
hz <- sort(unique(c(0, 1, hd, quantile(d$time_days, c(.1, .25, .5, .75, .9), type = 1),
                    max(d$time_days), max(d$time_days) + 7)))
na_beyond <- function(x, beyond) { x[beyond] <- NA; x }
res <- list(horizons_days = hz)
for (g in c("__all__", sort(unique(d$group)))) {
  s <- if (g == "__all__") d else d[d$group == g, ]
  beyond <- hz > max(s$time_days)
  km <- survfit(Surv(time_days, status == 1) ~ 1, data = s, conf.type = "log-log")
  sk <- summary(km, times = hz, extend = TRUE)
  tab <- summary(km)$table
  out <- list(
    n = nrow(s),
    one_minus_km = list(estimate = na_beyond(1 - sk$surv, beyond), variance = na_beyond(sk$std.err^2, beyond),
                        lower = na_beyond(1 - sk$upper, beyond), upper = na_beyond(1 - sk$lower, beyond),
                        n_at_risk = sk$n.risk),
    median = list(median = unname(tab["median"]), lower = unname(tab["0.95LCL"]), upper = unname(tab["0.95UCL"])))
  # cuminc stops ("NAs in foreign function call") when the cohort has no event of any cause
  ci <- tryCatch(cuminc(s$time_days, s$status, cencode = 0), error = function(e) NULL)
  if (!is.null(ci) && !is.null(ci[["1 1"]])) {
    tp <- timepoints(ci, hz)
    est <- tp$est[grep("^1 1$", rownames(tp$est)), ]; v <- tp$var[grep("^1 1$", rownames(tp$var)), ]
    out$aalen_johansen <- list(estimate = unname(est), variance = unname(v),
                               lower = unname(est^exp(-z * sqrt(v) / (est * log(est)))),
                               upper = unname(est^exp(z * sqrt(v) / (est * log(est)))))
    out$cinc <- list(time = ci[["1 1"]]$time, est = ci[["1 1"]]$est, var = ci[["1 1"]]$var)
  }
  res[[g]] <- out
}
if (length(unique(d$group)) > 1) {
  sd <- survdiff(Surv(time_days, status == 1) ~ group, data = d)
  tests <- list(logrank_chisq = unname(sd$chisq), logrank_df = sum(sd$exp > 0) - 1, logrank_p = unname(sd$pvalue))
  gt <- tryCatch(cuminc(d$time_days, d$status, group = d$group, cencode = 0)$Tests, error = function(e) NULL)
  if (!is.null(gt) && "1" %in% rownames(gt)) {
    tests$gray_stat <- unname(gt["1", "stat"]); tests$gray_p <- unname(gt["1", "pv"]); tests$gray_df <- unname(gt["1", "df"])
  }
  res[["tests"]] <- tests
}
tojson <- function(x) {
  if (is.list(x)) {
    if (!is.null(names(x))) return(paste0("{", paste(sprintf("\"%s\": %s", names(x), sapply(x, tojson)), collapse = ", "), "}"))
    return(paste0("[", paste(sapply(x, tojson), collapse = ", "), "]"))
  }
  v <- ifelse(is.na(x), "null", sprintf("%.17g", x))
  # always a list for vectors, even of length 1, except the scalar fields
  if (length(x) == 1 && is.null(attr(x, "vec"))) v else paste0("[", paste(v, collapse = ", "), "]")
}
vec <- function(x) { attr(x, "vec") <- TRUE; x }
for (g in setdiff(names(res), c("tests", "horizons_days"))) {
  for (blk in c("one_minus_km", "aalen_johansen", "cinc")) {
    if (!is.null(res[[g]][[blk]])) res[[g]][[blk]] <- lapply(res[[g]][[blk]], vec)
  }
}
res$horizons_days <- vec(res$horizons_days)
writeLines(tojson(res), a[2])
