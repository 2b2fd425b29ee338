@echo off
rem Claude Code Orchestrator launcher for Windows: finds Python, creates venv\ on first use,
rem dispatches a verb. All behaviour lives in orchestrator.py; this file only sets up and forwards.
rem Verbs: draft new run single status watch logs stop plan serve clean validate demo setup help
setlocal
set "HERE=%~dp0"
set "VENV=%HERE%venv"
set "PY=%VENV%\Scripts\python.exe"
set "VERB=%~1"
if "%VERB%"=="" goto menu
shift
goto dispatch

:menu
echo Claude Code Orchestrator: verbs are draft new run single status watch logs stop plan serve clean validate demo setup help
set /p VERB="verb> "
if "%VERB%"=="" exit /b 0
set "ID="
if /i "%VERB%"=="draft" set /p ID="requirements document (e.g. PRD.md): "
if /i "%VERB%"=="new" set /p ID="milestone id, then the title in double quotes: "
if /i "%VERB%"=="logs" set /p ID="milestone id: "
if /i "%VERB%"=="stop" set /p ID="milestone id (empty: the whole run): "
if /i "%VERB%"=="plan" set /p ID="milestone id (empty: the whole plan): "
if /i "%VERB%"=="logs" set "ID=%ID% -f"
if /i "%VERB%"=="help" goto usage
if /i "%VERB%"=="setup" goto setup
call :ensure || exit /b 2
set "ARGS= %ID%"
goto run

:dispatch
if /i "%VERB%"=="help" goto usage
if /i "%VERB%"=="setup" goto setup
call :ensure || exit /b 2
set "ARGS="
:collect
if "%~1"=="" goto run
set ARGS=%ARGS% %1
shift
goto collect
:run
if /i "%VERB%"=="run" ( "%PY%" "%HERE%orchestrator.py" run --auto-resume %ARGS% & exit /b %ERRORLEVEL% )
if /i "%VERB%"=="single" ( "%PY%" "%HERE%orchestrator.py" run %ARGS% & exit /b %ERRORLEVEL% )
for %%V in (draft new status watch logs stop plan serve clean validate demo) do (
  if /i "%VERB%"=="%%V" ( "%PY%" "%HERE%orchestrator.py" %%V %ARGS% & exit /b %ERRORLEVEL% )
)
echo error: unknown verb "%VERB%" 1>&2
goto usage_error

:setup
call :ensure || exit /b 2
echo ready: %VENV%
exit /b 0

:ensure
if exist "%PY%" goto install
where py >nul 2>nul && ( py -3 -m venv "%VENV%" ) || ( python -m venv "%VENV%" )
if not exist "%PY%" ( echo error: Python 3.11 or newer is needed: https://www.python.org/downloads/ 1>&2 & exit /b 2 )
:install
if exist "%VENV%\.installed" exit /b 0
"%PY%" -m pip install --disable-pip-version-check -q -r "%HERE%requirements.txt" || exit /b 2
echo done> "%VENV%\.installed"
exit /b 0

:usage
echo usage: setup.bat [draft^|new^|run^|single^|status^|watch^|logs^|stop^|plan^|serve^|clean^|validate^|demo^|setup^|help] [ARGS...]
exit /b 0
:usage_error
echo usage: setup.bat [draft^|new^|run^|single^|status^|watch^|logs^|stop^|plan^|serve^|clean^|validate^|demo^|setup^|help] [ARGS...] 1>&2
exit /b 2
