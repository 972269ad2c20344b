r"""The answer-extraction table: texts phrased the ways models write answers, with the answer each
must give and where it comes from.

Sources of the phrasings: SmolLM2-135M-Instruct outputs sampled with `ttc.models.smollm2()` and
`ttc.backends.Transformers` (the demo prompt and the default boxed prompt on GSM8K; the "smollm2"
rows, copied as generated), the MATH-500 and GSM8K reference solutions packaged with ttc in
src/ttc/data (the "math500"/"gsm8k" rows), the Minerva/lm-eval "Final Answer: The final answer is X.
I hope it is correct." format, markdown answers of chat models, and the failing examples of the
project's fidelity audit of commit 60e66bf (section 7; the "review" rows).

EXTRACT rows: (text, finished, expected answer as written, expected source). A None answer has a
None source. `finished=False` is a trace cut at max_tokens.
EQUIVALENT rows: (a, b, expected): either side may be a bare answer or a whole solution.
"""

B = "\\"  # one backslash, for readability where raw strings would not do

EXTRACT = [
    # -- the review's failing examples (section 7) --------------------------------------------
    ("The answer is 3/4.", True, "3/4", "stated"),
    ("The answer is 3/4", True, "3/4", "stated"),
    (r"The answer is \frac{14}{3}.", True, r"\frac{14}{3}", "stated"),
    (r"The answer is \frac{3}{4}.", True, r"\frac{3}{4}", "stated"),
    ("So the final answer is 2^{10}.", True, "2^{10}", "stated"),
    ("The final answer is 2^{10}", True, "2^{10}", "stated"),
    ("To find the answer, we multiply 6 by 7 to get 42.", True, "42", "last_number"),
    ("So it is 1/2", True, "1/2", "last_number"),
    (r"The answer is (3, \frac{\pi}{2}).", True, r"(3, \frac{\pi}{2})", "stated"),
    (r"The answer is 90^\circ.", True, r"90^\circ", "stated"),
    ("We need the answer. I arrive at the total 12 after adding.", True, "12", "last_number"),
    ("We need the answer. I arrive at the total after adding.", True, None, None),
    ("Let's compute the answer step by step: 12 - 5 = 7", True, "7", "last_number"),
    ("...to express the answer as a percentage: 32 water type / 96 Pokemon * 100% = 33.333...%, "
     "which rounds down to 33%", True, "33", "last_number"),
    # -- boxed, with nested braces; the last closed box wins -----------------------------------
    (r"so \boxed{\frac{1}{2}} done", True, r"\frac{1}{2}", "boxed"),
    (r"first \boxed{3} then \boxed{x^{2}+1}", True, "x^{2}+1", "boxed"),
    (r"$\boxed{\frac{\sqrt{3}}{2}}$", True, r"\frac{\sqrt{3}}{2}", "boxed"),
    (r"\fbox{7}", True, "7", "boxed"),
    (r"Thus $x = \boxed{-5}$.", True, "-5", "boxed"),
    (r"\boxed 5", True, "5", "boxed"),
    (r"The answer is \boxed{12} apples. I hope it is correct.", True, "12", "boxed"),
    (r"\boxed{\text{Evelyn}}", True, "Evelyn", "boxed"),
    (r"\boxed{\textbf{(C)}}", True, "(C)", "boxed"),
    (r"\boxed{5\text{ cm}}", True, r"5\text{ cm}", "boxed"),
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", True, r"\left( 3, \frac{\pi}{2} \right)", "boxed"),
    (r"\boxed{\begin{pmatrix} 1 \\ -2 \end{pmatrix}}", True, r"\begin{pmatrix} 1 \\ -2 \end{pmatrix}", "boxed"),
    (r"\boxed{[-2, 7)}", True, "[-2, 7)", "boxed"),
    (r"\boxed{\{1, 2, 3\}}", True, r"\{1, 2, 3\}", "boxed"),
    (r"\boxed{x \geq 5}", True, r"x \geq 5", "boxed"),
    (r"\boxed{1,000}", True, "1,000", "boxed"),
    (r"\boxed{\$18.50}", True, r"\$18.50", "boxed"),
    (r"\boxed{ 42 }.", True, "42", "boxed"),
    (r"\boxed{$42$}", True, "42", "boxed"),
    (r"So we get \boxed{6} and then \boxed{7}. Wait, I made an error: \boxed{8}", True, "8", "boxed"),
    # a box cut by max_tokens is no box: an earlier closed one, else the fallback (finished only)
    (r"first \boxed{3} then \boxed{4 +", True, "3", "boxed"),
    (r"unclosed \boxed{3 and 5", True, "5", "last_number"),
    (r"unclosed \boxed{3 and 5", False, None, None),
    # -- GSM8K's #### -------------------------------------------------------------------------
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", True, "72", "hashes"),
    ("#### 1,000", True, "1,000", "hashes"),
    ("She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer's market.\n#### 18", True, "18", "hashes"),
    ("It is 5.\n#### -3", True, "-3", "hashes"),
    ("#### 0.5", False, "0.5", "hashes"),
    ("We compute 3 + 4.\n\n#### 7\n", True, "7", "hashes"),
    # a markdown heading is no GSM8K answer line
    ("#### Step 1: Add the apples\nShe has 3 + 4 = 7.\n#### Step 2: Answer\nThe answer is 7.", True, "7", "stated"),
    ("#### Step 1\nWe get 9 apples.", True, "9", "last_number"),
    ("#### Step 1\nWe get 9 apples", False, None, None),
    # -- stated answers ------------------------------------------------------------------------
    ("The answer is 42.", True, "42", "stated"),
    ("The answer is 42", False, "42", "stated"),  # explicit: read even from a cut trace
    ("The final answer is $12.50", True, "12.50", "stated"),
    ("The answer is: 15 apples", True, "15", "stated"),
    ("**Answer:** 42", True, "42", "stated"),
    ("**Answer**: 42", True, "42", "stated"),
    ("**Final Answer:** $\\frac{7}{2}$", True, r"\frac{7}{2}", "stated"),
    ("**Final Answer**\nThe final answer is 11.", True, "11", "stated"),
    ("Final answer: $-12.5$", True, "-12.5", "stated"),
    ("final answer: 3", True, "3", "stated"),
    ("Answer: 17", True, "17", "stated"),
    ("ANSWER: 17", True, "17", "stated"),
    ("The answer to the question is 64.", True, "64", "stated"),
    ("The answer to this problem is $\\sqrt{2}$.", True, r"\sqrt{2}", "stated"),
    ("So, the answer is 1,234,567.", True, "1,234,567", "stated"),
    ("The answer is -7 because 3-10=-7", True, "-7", "stated"),
    ("The answer is 5, so she has 5 left.", True, "5", "stated"),
    ("the answer is $18 per day.", True, "18", "stated"),
    ("The answer is approximately 3.14.", True, "3.14", "stated"),
    ("So the answer is that she has 18 apples left.", True, "18", "stated"),
    ("Hence the answer is \\( \\dfrac{7}{2} \\)", True, r"\dfrac{7}{2}", "stated"),
    ("The answer is \\[ \\frac{1}{3} \\]", True, r"\frac{1}{3}", "stated"),
    ("The answer is $$x^2 - 1$$", True, "x^2 - 1", "stated"),
    ("The answer is \\text{Evelyn}.", True, "Evelyn", "stated"),
    ("The answer is (C).", True, "(C)", "stated"),
    ("Therefore the answer would be 24 hours.", True, "24", "stated"),
    ("The correct answer is 9.", True, "9", "stated"),
    ("My answer = 81", True, "81", "stated"),
    ("The answer is 90 degrees.", True, "90", "stated"),
    ("The answer is 2.5 km; she walks the rest.", True, "2.5", "stated"),
    ("The answer is 100%.", True, "100%", "stated"),
    ("The answer is x = 5 or x = -2.", True, "x = 5 or x = -2", "stated"),
    ("The answer is 7.\nLet me double-check: 3 + 4 = 7.", True, "7", "stated"),
    ("The answer is 7. Check: 4 + 3 = 7 and 2 times 7 = 14.", True, "7", "stated"),
    # a phrase without a copula is not a stated answer: the last number of a finished trace
    ("The answer key lists 12 but I get 13", True, "13", "last_number"),
    ("I hope the answer is helpful. The total is 18", True, "18", "last_number"),
    ("I hope the answer is helpful. The total is 18", False, None, None),
    ("The answer is correct since 4 + 4 = 8", True, "8", "last_number"),
    ("The answer is a bit tricky, but we get 7", True, "7", "last_number"),
    ("The answer is 2 pi.", True, "2 pi", "stated"),
    ("That leaves 40-24 = 16 people that think horse #12 will win", True, "12", "last_number"),
    # the Minerva / lm-eval format, with its "I hope it is correct" tail
    ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", True, r"\frac{3}{4}", "stated"),
    ("Final Answer: The final answer is $5$. I hope it is correct.", True, "5", "stated"),
    ("Final Answer: The final answer is 2005. I hope it is correct.", True, "2005", "stated"),
    ("Final Answer: The final answer is $(1,2)$. I hope it is correct.", True, "(1,2)", "stated"),
    ("Final Answer: The final answer is $x^2+7x+10$. I hope it is correct.", True, "x^2+7x+10", "stated"),
    ("Final Answer: The final answer is 12 I hope it is correct.", True, "12", "stated"),
    # -- fractions, powers, negatives, decimals, separators -------------------------------------
    ("The answer is \\dfrac{5}{8}.", True, r"\dfrac{5}{8}", "stated"),
    ("The answer is -\\frac{1}{2}.", True, r"-\frac{1}{2}", "stated"),
    ("The answer is 5/8 of the pie.", True, "5/8", "stated"),
    ("The answer is 3^4 = 81.", True, "81", "stated"),  # an equation with no variables: its last side
    ("The answer is -15.", True, "-15", "stated"),
    # -- equations: with no variables, the last side; with a variable, the whole ----------------
    ("The answer is 17 + 25 = 42.", True, "42", "stated"),
    ("The answer is 17 + 25 = 32.", True, "32", "stated"),  # read, not checked: the vote decides
    ("The answer is 3 + 4 = 7 apples.", True, "7", "stated"),
    (r"The answer is $12 \times 2 = 24$.", True, "24", "stated"),
    (r"So the total is \boxed{5 \cdot 3 = 15}", True, "15", "boxed"),
    (r"The answer is $\frac{1}{2} + \frac{1}{4} = \frac{3}{4}$.", True, r"\frac{3}{4}", "stated"),
    ("The answer is 2 + 3 = 5 = 5.", True, "5", "stated"),  # a chain
    ("#### 2 + 3 = 5", True, "5", "hashes"),
    ("So 17 + 25 = 42", True, "42", "last_number"),
    ("17 + 25 = 32\n\nSo, the answer is \\boxed{}.", True, None, None),  # an empty box: no answer, no guess
    ("The answer is 32.\n\nSo, the answer is \\boxed{}.", True, None, None),
    (r"So, the answer is \boxed{}. No: \boxed{42}.", True, "42", "boxed"),
    ("So, the answer is \\boxed{}.\n#### 42", True, "42", "hashes"),
    ("So, the answer is \\boxed{}.", False, None, None),
    ("The answer is x = 5.", True, "x = 5", "stated"),
    ("The answer is y = 2x + 3.", True, "y = 2x + 3", "stated"),
    ("The answer is P(A) = 0.3.", True, "P(A) = 0.3", "stated"),
    ("The answer is 0.25.", True, "0.25", "stated"),
    ("The answer is .5", True, ".5", "stated"),
    ("The answer is 12,345.67.", True, "12,345.67", "stated"),
    ("The answer is $1,000,000.", True, "1,000,000", "stated"),
    ("The answer is 10^{6}.", True, "10^{6}", "stated"),
    ("The answer is 2\\sqrt{5}.", True, r"2\sqrt{5}", "stated"),
    ("The answer is \\pi.", True, r"\pi", "stated"),
    ("The answer is 6\\pi.", True, r"6\pi", "stated"),
    # -- degrees, units, text -----------------------------------------------------------------
    ("The answer is $45^\\circ$.", True, r"45^\circ", "stated"),
    ("The answer is $5\\text{ cm}$.", True, r"5\text{ cm}", "stated"),
    ("The answer is \\$32.", True, r"\$32", "stated"),
    ("The answer is 8 feet.", True, "8", "stated"),
    ("The answer is 3 hours and 20 minutes.", True, "3", "stated"),
    # -- tuples, intervals, matrices, inequalities, sets, expressions -------------------------
    ("The answer is (2, -3).", True, "(2, -3)", "stated"),
    ("The answer is $(-\\infty, 3]$.", True, r"(-\infty, 3]", "stated"),
    ("The answer is [2, 5).", True, "[2, 5)", "stated"),
    ("The answer is $\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}$.", True, r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", "stated"),
    ("The answer is $x \\geq 5$.", True, r"x \geq 5", "stated"),
    ("The answer is x >= 5.", True, "x >= 5", "stated"),
    ("The answer is \\{1, 2, 3\\}.", True, r"\{1, 2, 3\}", "stated"),
    ("The answer is $x^2 + 2x + 1$.", True, "x^2 + 2x + 1", "stated"),
    ("The answer is 3x + 2.", True, "3x + 2", "stated"),
    ("The answer is $a = 4$.", True, "a = 4", "stated"),
    ("The answer is 1, 2, and 3.", True, "1, 2, and 3", "stated"),
    # -- the last-number fallback, finished traces only ----------------------------------------
    ("we get 3 apples and 7 pears", True, "7", "last_number"),
    ("we get 3 apples and 7 pears", False, None, None),
    ("a negative: -4", True, "-4", "last_number"),
    ("So she has 5 + 6 = 11 apples.", True, "11", "last_number"),
    ("Total: $1,250.", True, "1,250", "last_number"),
    ("It costs \\$12.", True, "12", "last_number"),
    ("Each person gets $\\frac{2}{3}$ of a pizza.", True, r"\frac{2}{3}", "last_number"),
    ("Each person gets 2/3 of a pizza.", True, "2/3", "last_number"),
    ("The ratio is 0.75", True, "0.75", "last_number"),
    ("First 2 + 3 = 5, then 5 * 4 = 20", True, "20", "last_number"),
    ("First 2 + 3 = 5, then 5 * 4 = 20", False, None, None),
    ("Step 1: we add. Step 2: 9", True, "9", "last_number"),
    # -- cleaning, math environments and anchors (rows the mutation run found unpinned) ---------
    ("The answer is **42**.", True, "42", "stated"),
    (r"$\boxed{\displaystyle\frac{1}{2}}$", True, r"\frac{1}{2}", "boxed"),
    (r"so $\boxed{18.}$", True, "18", "boxed"),
    (r"Thus $x = \boxed7$.", True, "7", "boxed"),
    ("She makes $18 every day.\n#### $18", True, "18", "hashes"),
    ("She makes 18 dollars.\n#### \\(18\\)", True, "18", "hashes"),
    ("The answer is\n$$\n\\frac{3}{4}\n$$\nso we are done.", True, r"\frac{3}{4}", "stated"),
    ("The answer is $$\\frac{1}{2}.", False, r"\frac{1}{2}", "stated"),  # a display never closed
    (r"The answer is $f(x) = 1 \text{ if } x > 0$.", True, r"f(x) = 1 \text{ if } x > 0", "stated"),
    ("The answer is $18.\n2 * 9 = $18 in total.", True, "18", "stated"),  # currency, not a math span
    ("The answer is\n42", True, "42", "stated"),
    ("The answer is 5; the others are wrong.", True, "5", "stated"),
    ('The answer is "about 42".', True, "42", "stated"),
    ("The answer is ???", True, None, None),
    ("So the total is $\\textbf{7}$", True, "7", "last_number"),
    ("The total is 1,000 apples, that is $1000$ in all.", True, "1000", "last_number"),  # the last form written
    # -- nothing to find -----------------------------------------------------------------------
    (None, True, None, None),
    ("", True, None, None),
    ("no digits here at all", True, None, None),
    ("I do not know.", True, None, None),
    ("The answer is", True, None, None),
    ("The answer is not clear.", True, None, None),
    # -- reference solutions (MATH-500 and GSM8K test sets; the sweep checks them all) ----------
    ("We have that $r = \\sqrt{0^2 + 3^2} = 3.$ ... Therefore, the polar coordinates are "
     "$\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$", True, r"\left( 3, \frac{\pi}{2} \right)", "boxed"),
    ("Evaluating, $f(-2) = \\frac{3(-2) - 2}{-2 - 2} = \\frac{-8}{-4} = 2$ ... so the answer is "
     "$2+\\frac{5}{3}+\\frac{4}{2} = \\boxed{\\frac{14}{3}}$", True, r"\frac{14}{3}", "boxed"),
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day at "
     "the farmer\u2019s market.\n#### 18", True, "18", "hashes"),
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day at "
     "the farmer\u2019s market.", True, "18", "last_number"),
]

#: real SmolLM2-135M-Instruct outputs, as generated: (text, finish_reason, expected answer, expected
#: source); each expectation was checked by reading the text
SMOLLM2: list[tuple[str, str, str | None, str | None]] = [
    # `ttc demo --problems 20 --save` (seed 0), the Sample row: each problem's one sample
    ("Suma: 3 (number of cards Leo will have) + 2 (remaining cards) = 5\nLeo has 2 more cards now.\nThe answer is 5.", "stop", "5", "stated"),
    ("Noah has 8 - 6 = 2 shells left.\nNoah now has 2 + 2 = 4 shells.\nNoah has 4 shells remaining.\nThe answer is 4.", "stop", "4", "stated"),
    ("1. Emma gets 5 - 4 = 1 cookie.\n2. Emma has 5 cookies.\n3. 5 + 1 = 6.\n4. Emma has 6 cookies.", "stop", "6", "last_number"),
    ("Sam gets 6 more stickers. To find out how many stickers Sam has now, we need to divide 3 (the number of stickers) by 6 (the number of stickers). This results in 3 stickers.\nThe total number of stickers Sam has now is the sum of the number of stickers he got and the number of stickers he has now, which is 3 + 6 or 9, 3 + 6 = 9, 3 +", "length", None, None),
    ("Noah has 6 stickers in total. 3 more stickers later, Noah gets 3 stickers in total.\nThe answer is 3.", "stop", "3", "stated"),
    ("3 + 3 = 6\nAnna has 6 cookies now.", "stop", "6", "last_number"),
    ("This is a classic logic puzzle. If there are 7 cards, and Mia gets 5 more cards, then the total number of cards Mia has now is 7 + 5 = 12 cards.", "stop", "12", "last_number"),
    ("Noah has 9 - 6 = 1 shell.\nNoah has 1 + 1 + 1 = 2 shells now.\nNoah has 1 + 2 + 3 = 4 shells now.", "stop", "4", "last_number"),
    ("Tom gets 3 apples more than 8 apples. Therefore, Tom has 3 + 8 = 11 apples now.", "stop", "11", "last_number"),
    ("Tom has 7 - 5 = 1 shell.\nTom has 1 + 1 = 2 shells now.\nThe answer is 2.", "stop", "2", "stated"),
    ("To solve this problem, we'll first calculate the total number of pencils Mia has.\nMia has 5 pencils, so she has a total of 5 pencils (1 pencil plus 1 additional pencil).\nThe answer is 5 + 1 = 6.\n\nThe final answer is 6 pencils.", "stop", "6", "stated"),
    ("1. Total number of stickers = 9\n2. Number of stickers Lucy gets = 3\n3. Lucy gets 3 more stickers = 9 - 3 = 5 stickers\n4. Number of stickers Lucy has now = Number of stickers Lucy has now = Total stickers - Number of stickers Lucy gets = 9 - 5 = 24 stickers\n\nThe answer is 24.", "stop", "24", "stated"),
    ("Anna has 9 - 3 = 4 cookies.\n\nIn 9 days (1 month) she will have 4 * 12 = 44 cookies.", "stop", "44", "last_number"),
    ("Sam has 3 + 7 = 10 books.\nSam has 10 books now.", "stop", "10", "last_number"),
    ("Noah has 6 + 9 = 15 marbles.", "stop", "15", "last_number"),
    ("Let's break this down step by step. Anna has 7 cards. If she gets 5 more cards, she needs to have 7 - 5 = 1 card left. This can be represented as 1 - 2 = 1. Adding 1 to 1 is 2. Now, adding 1 to 1 is 2. Therefore, Anna has 2 cards. The final answer is 2.", "stop", "2", "stated"),
    ("Sammy gets 4 more stickers than Sam, so to find the final answer, we need to add 4 to the number of stickers Sam has.\nSammy has 5 + 4 = 9 stickers.\nSo, Sam has 9 stickers now.", "stop", "9", "last_number"),
    ("Tom has 9 books, and Tom gets 3 more books. 9 + 3 = 12, so Tom has 12 books now.", "stop", "12", "last_number"),
    ("Thirty-five (thirty-five)\n\nThe answer is 35.", "stop", "35", "stated"),
    ("Drools: 10\n\nThe answer is 11.\n\nThe original answer was 7.", "stop", "11", "stated"),
    # the MajorityVote(n=4) row of the same run: every sample cut at max_tokens, and others
    ("Sam gets 6 more stickers. To find out how many stickers Sam has now, we need to divide 3 (the number of stickers) by 6 (the number of stickers). This results in 3 stickers.\nThe total number of stickers Sam has now is the sum of the number of stickers he got and the number of stickers he has now, which is 3 + 6 or 9, 3 + 6 = 9, 3 +", "length", None, None),
    ("To solve this problem, we need to break it down step by step. First, we find out the total number of cards Mia has. This is calculated by adding 5 to the initial number, which is 7. Then, we find out the difference between this total and the initial number. The difference is 5 - 7 = 8.\n\nSo, Mia has a total of 7 cards (5 more from Mia) and 8 cards today.", "length", None, None),
    ("That's a classic math problem. The solution is based on the formula to calculate the number of shells in a given amount of shells. To solve it, you multiply the number of shells by the amount of shells per shell to get the total number of shells. In this case, you multiply 7 x 5 (the number of shells that make up 5 shells) by 7 (the amount of shells that make up 7 shells).\n\nSo, 7", "length", None, None),
    ("To determine the final answer, we need to consider the equation: Lucy gets 3 more stickers than Lucy.\n\nWe can think of this as a scenario with 9 stickers out of the total of 30 stickers. If we represent the total number of stickers as a fraction or decimal, we would find the answer as a decimal to 9 decimals.\n\nHere's how to do it: 30 / 9 = 3. So, the answer", "length", None, None),
    ("1. A common and simple rule to solve this puzzle.\n1. First, we determine that Anna will have 5 more cards than initially.\n2. To get Anna to have 5 more cards, we need to find 5 x 6. This means 3 x 6 = 18 (the total number of cards in Anna's hand).\n3. So, Anna now has 7 cards.\n\nThe correct answer is 7.", "length", "7", "stated"),
    ("To solve this problem, we need to consider the total number of cards and the number of cards Anna has. We know that Anna gets 5 more cards, which means Anna has 5 x 7 = 30 cards. This is calculated by finding the difference of 5 and 7, which is the total number of cards divided by the number of cards.\n\nTherefore, 30 x 7 = 210. Now, we need to", "length", None, None),
    ("1. Using the information that Sam gets 4 more stickers, we know there are 5 stickers left.\n2. If Sam had 5 stickers, he would already have 4 stickers left.\n3. So, Sam has 5 - 4 = 1 sticker left.\n4. Now, Sam has 1 sticker left.\n5. Therefore, the answer is 1.\n\nIn other words, 1 is the sticker left, and", "length", "1", "stated"),
    ("There are 2 cards left, which is 2 - 6 = 2 cards that Leo can have now.", "stop", "2", "last_number"),
    ("Noah has 8 - 6 = 2 shells.", "stop", "2", "last_number"),
    ("Noah has 8 + 6 = 14 shells now.", "stop", "14", "last_number"),
    ("Noah gets 6 + 8 = 14 shells.\nNoah has 14 shells now.", "stop", "14", "last_number"),
    ("1. Emma gets 5 - 4 = 1 cookie.\n2. Emma has 5 cookies.\n3. 5 + 1 = 6.\n4. Emma has 6 cookies.", "stop", "6", "last_number"),
    ("There are 5 + 4 = 9 cookies Emma has now.", "stop", "9", "last_number"),
    ("Fraction: 2/4", "stop", "2/4", "last_number"),
    ("4 (more cookies Emma gets) + 5 (additional cookies Emma gets) = 20\nEmma has now 21 cookies.\n#### 21\nThe answer is: 21", "stop", "21", "hashes"),
    ("Sam has 3 + 6 = 9 stickers.\nSam has 3 + 6 = 9 stickers now.", "stop", "9", "last_number"),
    ("Sam has 3 + 6 = 9 stickers. Sam has now 9 - 6 = 3 stickers.", "stop", "3", "last_number"),
    ("Let's break down the situation. Noah has 6 stickers.\n\nNoah gets 3 more stickers, so 6 + 3 = 9 stickers, which is 6 x 3 = 18 stickers.\n\nTo find the total number of stickers Noah now has, we add the number of stickers Noah got: 6 + 18 = 12 stickers.\n\nSo, Noah now has 12 stickers.", "stop", "12", "last_number"),
    ("Number of stickers Noah has now = 6 (Number of stickers Noah gets) + 3 (Number of stickers Noah gets by getting 3 stickers) = 9 stickers\n\nSo, Noah has 9 stickers now.", "stop", "9", "last_number"),
    ("3 + 3 = 6\nAnna has 6 cookies now.", "stop", "6", "last_number"),
    ("Anna has 9 + 3 = 12 cookies.\n\nTo find the final answer, you would use integer division to remove the fraction and convert the result to 100% by performing decimal division, which would involve breaking down and converting the number of cookies to a decimal.", "stop", "100", "last_number"),
    ("1. Sarah - 3\n2. Anna - 9", "stop", "9", "last_number"),
    ("Suma: 3 (number of cards Leo will have) + 2 (remaining cards) = 5\nLeo has 2 more cards now.\nThe answer is 5.", "stop", "5", "stated"),
    ("If Leo has 2 more cards, the answer is 2 + 2 = 4.", "stop", "4", "stated"),  # the equation rule: its last side
    ("Leo has 2 more cards than Leo.\nNumber of cards = Total number of cards - Leo's number of cards\nNumber of cards = 2 + 2 = 4\nLeo has 4 cards.\nThe answer is: 4", "stop", "4", "stated"),
    ("Noah has 8 - 6 = 2 shells left.\nNoah now has 2 + 2 = 4 shells.\nNoah has 4 shells remaining.\nThe answer is 4.", "stop", "4", "stated"),
]

EQUIVALENT = [
    # bare answers
    ("0.5", r"\frac{1}{2}", True), ("1,000", "1000", True), ("12.50", "12.5", True), ("x+1", "1+x", True),
    ("2.0", "2", True), ("75%", "75", True), (r"\$18", "18", True), (r"\dfrac{3}{4}", "0.75", True),
    ("-3", "-3.0", True), ("3/4", r"\frac{3}{4}", True), ("2^{10}", "1024", True), (r"90^\circ", "90", True),
    (r"x \geq 5", "x >= 5", True), (r"x \ge 5", r"x \geq 5", True), ("x = 5", "5", True),
    (r"\text{Evelyn}", "Evelyn", True), (r"\text{(C)}", "C", True), (r"5\text{ cm}", "5", True),
    ("(3, \\frac{\\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)", True), ("[2, 5)", "[2,5)", True),
    (r"\{1,2,3\}", r"\{3,2,1\}", True), (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    ("x^2+2x+1", "(x+1)^2", True), (r"2\sqrt{5}", r"\sqrt{20}", True), ("12,345.67", "12345.67", True),
    (r"(-\infty, 3]", r"(-\infty,3]", True),
    # equations: with no variables, their last side; both orders give the same verdict
    ("17 + 25 = 42", "42", True), ("17 + 25 = 42", "17 + 25 = 32", False), ("17 + 25 = 32", "32", True),
    ("3 + 4 = 7 apples", "7", True), (r"12 \times 2 = 24", "24", True), (r"$5 \cdot 3 = 15$", "15", True),
    ("2 + 3 = 5 = 5", "5", True), ("y = 2x + 3", "2x + 3", True), ("x = 5", "x = 6", False),
    ("x + 1 = 5", "5", True),  # math-verify reads an equation against a plain answer as its last side
    ("2", "3", False), ("0.5", r"\frac{1}{3}", False), ("x+1", "x-1", False), (None, "1", False), ("1", None, False),
    ("1000", "100", False), ("12", "1,2", False), ("2", "2.0001", False), ("(1,2)", "(2,1)", False),
    ("[2, 5)", "[2, 5]", False), (r"x \geq 5", r"x > 5", False), ("-3", "3", False),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}", False),
    # a whole solution on either side
    ("The answer is 3/4.", r"\frac{3}{4}", True),
    (r"\frac{3}{4}", "The answer is 3/4.", True),
    (r"\boxed{0.5}", r"The answer is \frac{1}{2}.", True),
    ("So she has 5 + 6 = 11 apples.", "11", True),
    ("11", "So she has 5 + 6 = 11 apples.", True),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72", True),
    ("Final Answer: The final answer is $x^2+7x+10$. I hope it is correct.", "(x+2)(x+5)", True),
    ("Therefore the answer is \\boxed{\\frac{14}{3}}.", "The final answer is 14/3. I hope it is correct.", True),
    ("To find the answer, we multiply 6 by 7 to get 42.", "42", True),
    ("To find the answer, we multiply 6 by 7 to get 42.", "6", False),
    ("The answer is 3/4.", "3", False),
    ("The final answer is 2^{10}.", "1024", True),
    ("The final answer is 2^{10}.", "2", False),
    ("The answer is (3, \\frac{\\pi}{2}).", "(3,\\frac{\\pi}{2})", True),
    ("The answer is 90^\\circ.", "90", True),
    ("The answer is $x \\geq 5$.", "x >= 5", True),
    ("I give up.", "5", False),
    ("Bob ate 5 apples", "5", True),  # three prose words: a solution, not a bare answer
    (r"\text{Evelyn Smith}", "Evelyn Smith", True),  # two words: still a bare answer
    ("We need the answer. I arrive at the total after adding.", "5", False),  # no answer on one side
    (None, None, False), (None, "None", False),
]
